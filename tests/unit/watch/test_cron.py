"""The cron of monitor.triggers.schedule: fields, names, steps, and when it is due."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runtime.spec.cron import due, next_fire, parse_cron


def at(*parts) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(("expr", "after", "expected"), [
    ("0 3 * * 0", at(2026, 12, 1, 12, 0), at(2026, 12, 6, 3, 0)),     # next Sunday 03:00
    ("0 3 * * sun", at(2026, 12, 6, 3, 0), at(2026, 12, 13, 3, 0)),   # strictly after
    ("*/15 * * * *", at(2026, 1, 1, 0, 7), at(2026, 1, 1, 0, 15)),
    ("30 9-17/4 * * mon-fri", at(2026, 12, 4, 18, 0), at(2026, 12, 7, 9, 30)),  # Fri -> Mon
    ("0 0 1 jan,jul *", at(2026, 2, 1, 0, 0), at(2026, 7, 1, 0, 0)),
    ("0 0 13 * 5", at(2026, 12, 1, 0, 0), at(2026, 12, 4, 0, 0)),     # dom OR dow (Friday)
    ("0 12 29 2 *", at(2026, 3, 1, 0, 0), at(2028, 2, 29, 12, 0)),    # leap day
    ("0 0 * * 7", at(2026, 12, 1, 0, 0), at(2026, 12, 6, 0, 0)),      # 7 is Sunday too
])
def test_next_fire(expr, after, expected):
    assert next_fire(parse_cron(expr), after) == expected


@pytest.mark.parametrize(("expr", "message"), [
    ("* * * *", "5 fields"),
    ("60 * * * *", "minute: 60 is outside 0-59"),
    ("* 5-2 * * *", "hour: range 5-2 runs backwards"),
    ("*/0 * * * *", "minute: step must be >= 1"),
    ("* * * foo *", "month: 'foo' is not a number"),
    ("0 0 31 4 *", "never fires"),
])
def test_bad_cron(expr, message):
    with pytest.raises(ValueError, match=message):
        parse_cron(expr)


def test_due_once_for_a_missed_time():
    cron = parse_cron("0 3 * * *")
    assert due(cron, at(2026, 12, 1, 2, 59), at(2026, 12, 1, 3, 0))
    assert not due(cron, at(2026, 12, 1, 3, 0), at(2026, 12, 1, 3, 10))
    assert due(cron, at(2026, 11, 20, 0, 0), at(2026, 12, 1, 0, 0))  # watcher was down
