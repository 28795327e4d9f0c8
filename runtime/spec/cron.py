"""A small cron: 5 fields (minute hour day-of-month month day-of-week), UTC, for
`monitor.triggers.schedule`. No dependency: the stdlib has no cron and the watcher needs only
"is a fire time due since the last check".

    parse_cron("0 3 * * 0")                  # Sundays 03:00
    next_fire(parse_cron("*/15 * * * *"), datetime(2026, 1, 1, tzinfo=UTC))

Each field: `*`, a number, `a-b`, a step (`*/15`, `a-b/2`) or a comma list of those; month and
weekday also take names (jan, mon). Weekday 0 and 7 are Sunday. As in Vixie cron, when both
day-of-month and day-of-week are restricted a day matching either fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12),
           ("day-of-week", 0, 7))
_NAMES = {3: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
          4: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]}


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day-of-month is `*`
    any_weekday: bool

    def day_matches(self, when: datetime) -> bool:
        dom = when.day in self.days
        dow = (when.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def matches(self, when: datetime) -> bool:
        return (when.month in self.months and self.day_matches(when)
                and when.hour in self.hours and when.minute in self.minutes)


def parse_cron(text: str) -> Cron:
    """Parse a 5-field cron expression; ValueError says which field is wrong and why."""
    parts = str(text).split()
    if len(parts) != 5:
        raise ValueError(f"a cron expression has 5 fields (minute hour day-of-month month "
                         f"day-of-week), got {len(parts)} in {text!r}")
    sets = [_field(part, i) for i, part in enumerate(parts)]
    weekdays = frozenset(d % 7 for d in sets[4])
    cron = Cron(frozenset(sets[0]), frozenset(sets[1]), frozenset(sets[2]), frozenset(sets[3]),
                weekdays, parts[2] == "*", parts[4] == "*")
    next_fire(cron, datetime(2000, 1, 1))  # "0 0 30 2 *" parses but never fires: say so now
    return cron


def _field(part: str, index: int) -> set[int]:
    name, lo, hi = _FIELDS[index]
    values: set[int] = set()
    for item in part.split(","):
        body, _, step_text = item.partition("/")
        step = _number(step_text, index, name) if step_text else 1
        if step < 1:
            raise ValueError(f"{name}: step must be >= 1 in {item!r}")
        if body == "*":
            start, end = lo, hi
        elif "-" in body:
            a, _, b = body.partition("-")
            start, end = _number(a, index, name), _number(b, index, name)
        else:
            start = _number(body, index, name)
            end = hi if step_text else start
        for value in (start, end):
            if not lo <= value <= hi:
                raise ValueError(f"{name}: {value} is outside {lo}-{hi} in {item!r}")
        if start > end:
            raise ValueError(f"{name}: range {start}-{end} runs backwards in {item!r}")
        values.update(range(start, end + 1, step))
    return values


def _number(text: str, index: int, name: str) -> int:
    text = text.strip().lower()
    if index in _NAMES and text in _NAMES[index]:
        return _NAMES[index].index(text) + (1 if index == 3 else 0)
    if not text.isdigit():
        raise ValueError(f"{name}: {text!r} is not a number")
    return int(text)


def next_fire(cron: Cron, after: datetime) -> datetime:
    """The first fire time strictly after `after` (same tzinfo), within 5 years; ValueError
    when the expression never fires (e.g. 31 in February only)."""
    when = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    limit = after + timedelta(days=366 * 5)
    while when <= limit:
        if when.month not in cron.months:
            when = (when.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
        elif not cron.day_matches(when):
            when = when.replace(hour=0, minute=0) + timedelta(days=1)
        elif when.hour not in cron.hours:
            when = when.replace(minute=0) + timedelta(hours=1)
        elif when.minute not in cron.minutes:
            when += timedelta(minutes=1)
        else:
            return when
    raise ValueError("the cron expression never fires")


def due(cron: Cron, since: datetime, until: datetime) -> bool:
    """Whether the cron fired in (since, until]: a watcher that checks now and then (or was
    down for a while) still runs a missed schedule once, not once per missed time."""
    try:
        return next_fire(cron, since) <= until
    except ValueError:
        return False
