"""The audit trail: every decision about a registered model, append-only and hash-chained.

    mlrt audit digits-mlp                      # the events, oldest first
    mlrt audit digits-mlp --at 2026-07-01T12:00:00   # which version each alias held then
    mlrt audit digits-mlp --verify             # exit 0 intact, 1 naming the first broken event

An event is a JSON object: `seq` (0, 1, ...), `time` (UTC ISO), `model`, `kind`, `actor`,
`reason`, `data` (the kind's fields), `prev` (the hash of the event before it, "" for the first)
and `hash` (SHA-256 of the canonical JSON of all the other keys). Editing an event breaks its
hash, deleting or reordering one breaks the next event's `prev`: `verify` finds both.

For callers (the driver, the CLI, the watcher):

    record_event(storage, model, "retrain_triggered", actor="watcher", reason="drift",
                 trigger="drift", evidence_run=run_id)
    with recorded(storage, model, "deployed", actor, version="3", address=url):
        deploy(...)                          # fails -> a "failed" event names this one

Write-ahead: the event is written before the action runs, so no action is ever reported done
without its event; an action that then fails gets a "failed" event pointing at it, and replays
(`aliases_at`) skip what failed. The file layout and its atomicity: runtime.governance.audit_store.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from runtime.errors import AuditError, InputError
from runtime.governance.audit_store import AuditStore

REGISTERED = "registered"  # version, run_id, gate {passed, reason, ...}, metrics, slices
ALIAS_MOVED = "alias_moved"  # alias, from, to: a passing gate moved it (or @candidate)
PROMOTED = "promoted"  # alias, from, to
ROLLED_BACK = "rolled_back"  # alias, from, to
APPROVED = "approved"  # version, alias, from, to: the serving alias moved to it
REJECTED = "rejected"  # version
CANARY_STARTED = "canary_started"  # alias, version, weight
CANARY_ENDED = "canary_ended"  # alias, version, outcome
RETRAIN_TRIGGERED = "retrain_triggered"  # trigger, evidence_run
AWAITING_APPROVAL = "awaiting_approval"  # version, alias: the watcher waits for a person
DEPLOYED = "deployed"  # version, model_uri, address, route
SERVED = "served"  # version, model_uri, url
SERVE_STOPPED = "serve_stopped"  # model_uri, url
FAILED = "failed"  # event (the seq of the action that failed), error
KINDS = frozenset({REGISTERED, ALIAS_MOVED, PROMOTED, ROLLED_BACK, APPROVED, REJECTED,
                   CANARY_STARTED, CANARY_ENDED, RETRAIN_TRIGGERED, AWAITING_APPROVAL,
                   DEPLOYED, SERVED,
                   SERVE_STOPPED, FAILED})
MOVES = frozenset({ALIAS_MOVED, PROMOTED, ROLLED_BACK, APPROVED})  # data: alias, from, to
NEEDS_REASON = frozenset({PROMOTED, ROLLED_BACK, APPROVED, REJECTED})


@dataclass(frozen=True)
class Event:
    seq: int
    time: str
    model: str
    kind: str
    actor: str
    reason: str | None
    data: dict[str, Any]
    prev: str
    hash: str

    @property
    def when(self) -> datetime:
        return datetime.fromisoformat(self.time)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "model": self.model, "kind": self.kind,
                "actor": self.actor, "reason": self.reason, "data": self.data,
                "prev": self.prev, "hash": self.hash}


@dataclass(frozen=True)
class Note:
    """Who moves an alias, why, and where the trail is: what registry.versions needs to record
    the move. `fields` are extra event data (e.g. the run that moved it)."""

    storage: str
    actor: str | None = None
    reason: str | None = None
    kind: str = ALIAS_MOVED
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trail:
    """A model's events as read (one per sequence number) and what is wrong with them."""

    events: list[Event] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def event_hash(data: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of an event without its own `hash`."""
    return hashlib.sha256(canonical({k: v for k, v in data.items() if k != "hash"}).encode()
                          ).hexdigest()


def default_actor() -> str:
    """Who acts when no --actor is given: MLRT_ACTOR, else the OS user."""
    if os.environ.get("MLRT_ACTOR"):
        return os.environ["MLRT_ACTOR"]
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return f"uid:{os.getuid()}"


def api_key_actor(key: str) -> str:
    """The actor of an HTTP action: an id derived from the API key, never the key itself."""
    return "api-key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def record_event(storage: str, model: str, kind: str, actor: str | None = None,
                 reason: str | None = None, **fields: Any) -> Event:
    """Append one event to `model`'s trail under `{storage}/audit/` and return it. Raises
    AuditError when it cannot be written (the caller must then not report its action done)
    and InputError for an unknown kind or a missing reason where one is required."""
    if kind not in KINDS:
        raise InputError(f"audit: unknown event kind '{kind}' (known: {', '.join(sorted(KINDS))})")
    if kind in NEEDS_REASON and not (reason or "").strip():
        raise InputError(f"--reason: required for a '{kind}' event: say why")
    try:  # JSON values only, checked before anything is written
        data = json.loads(canonical(fields))
    except (TypeError, ValueError) as e:
        raise AuditError(f"audit: the fields of a '{kind}' event are not JSON: {e}") from e
    who = actor or default_actor()

    def build(seq: int, tail: str | None) -> dict[str, Any]:
        event = {"seq": seq, "time": datetime.now(UTC).isoformat(timespec="microseconds"),
                 "model": model, "kind": kind, "actor": who, "reason": reason, "data": data,
                 "prev": json.loads(tail)["hash"] if tail else ""}
        return {**event, "hash": event_hash(event)}

    return _event(AuditStore.open(storage, model).append(build))


@contextmanager
def recorded(storage: str, model: str, kind: str, actor: str | None = None,
             reason: str | None = None, **fields: Any) -> Iterator[Event]:
    """Write the event, then run the body (the action); if the action raises, a "failed"
    event names this one (best effort: the first event already says what was attempted)."""
    event = record_event(storage, model, kind, actor, reason, **fields)
    try:
        yield event
    except BaseException as e:
        with contextlib.suppress(AuditError):  # the action's own error is what matters
            record_event(storage, model, FAILED, event.actor, None, event=event.seq,
                         error=f"{type(e).__name__}: {e}"[:500])
        raise


def _event(data: dict[str, Any]) -> Event:
    return Event(seq=data["seq"], time=data["time"], model=data["model"], kind=data["kind"],
                 actor=data["actor"], reason=data.get("reason"), data=data.get("data") or {},
                 prev=data["prev"], hash=data["hash"])


def load_trail(storage: str, model: str) -> Trail:
    """Every event of `model`, oldest first, with the problems `verify` reports."""
    store = AuditStore.open(storage, model)
    stored: dict[int, list] = {}
    for item in store.read_all():
        stored.setdefault(item.seq, []).append(item)
    trail = Trail()
    prev = ""
    for expected in range(max(stored) + 1 if stored else 0):
        items = stored.get(expected)
        if not items:
            trail.problems.append(f"event #{expected} is missing (deleted?)")
            prev = None
            continue
        parsed = [_parse(item) for item in items]
        if len(items) > 1:
            names = ", ".join(item.name for item in items)
            trail.problems.append(f"event #{expected}: {len(items)} events claim this number "
                                  f"({names}): written concurrently to an object store")
        # at a fork, the event the next one follows is the one the chain kept
        after = [_parse(i) for i in stored.get(expected + 1, [])]
        links = {a["prev"] for a in after if isinstance(a, dict)}
        data = next((p for p in parsed if isinstance(p, dict) and p.get("hash") in links),
                    parsed[0])
        name = items[parsed.index(data)].name
        problem = _problem(expected, name, data, prev)
        if problem:
            trail.problems.append(problem)
        if isinstance(data, dict):
            with contextlib.suppress(KeyError, TypeError):  # reported by _problem
                trail.events.append(_event(data))
            prev = data.get("hash")
        else:
            prev = None
    return trail


def _parse(item) -> dict[str, Any] | str:
    try:
        data = json.loads(item.text)
    except ValueError as e:
        return f"not valid JSON ({e})"
    return data if isinstance(data, dict) else "not a JSON object"


def _problem(seq: int, name: str, data: dict[str, Any] | str, prev: str | None) -> str | None:
    if isinstance(data, str):
        return f"event #{seq} ({name}) is {data}"
    missing = [k for k in ("seq", "time", "model", "kind", "actor", "data", "prev", "hash")
               if k not in data]
    if missing:
        return f"event #{seq} ({name}) lacks {', '.join(missing)}: edited"
    if data["seq"] != seq:
        return (f"event #{seq} ({name}) holds event #{data['seq']}: events were reordered or "
                "renamed")
    if event_hash(data) != data["hash"]:
        return f"event #{seq} ({data['kind']}, {data['time']}) was edited: its content does " \
               "not match its hash"
    if prev is not None and data["prev"] != prev:
        return (f"event #{seq} ({data['kind']}, {data['time']}) does not follow event "
                f"#{seq - 1}: an event before it was edited, deleted or reordered")
    return None


def details(event: Event, limit: int = 200) -> str:
    """An event's data as `key=value, ...` for tables (long values cut)."""
    parts = []
    for key, value in sorted(event.data.items()):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        parts.append(f"{key}={text if len(text) <= limit else text[:limit - 3] + '...'}")
    return ", ".join(parts)


def failed_seqs(events: list[Event]) -> set[int]:
    return {int(e.data["event"]) for e in events if e.kind == FAILED and "event" in e.data}


def aliases_at(events: list[Event], when: datetime | None = None) -> dict[str, str | None]:
    """Which version each alias pointed at, at `when` (now when None), by replaying the alias
    moves recorded until then; a move whose action failed is skipped."""
    failed = failed_seqs(events)
    state: dict[str, str | None] = {}
    for e in events:
        if when is not None and e.when > when:
            break
        if e.kind in MOVES and e.seq not in failed:
            state[e.data["alias"]] = e.data.get("to")
    return state


def reconcile(events: list[Event], registry_aliases: dict[str, str],
              registry_versions: list[str]) -> list[str]:
    """What the registry holds that the trail does not say: an alias moved outside mlrt (or
    whose event was deleted from the end of the trail), a version registered unaudited."""
    problems = []
    replayed = aliases_at(events)
    for alias in sorted(set(replayed) | set(registry_aliases)):
        audited, actual = replayed.get(alias), registry_aliases.get(alias)
        if audited != actual:
            problems.append(f"alias '{alias}' is on {_v(actual)} in the registry, the trail "
                            f"says {_v(audited)}: moved outside mlrt, or its event was lost")
    registered = {str(e.data.get("version")) for e in events if e.kind == REGISTERED}
    unaudited = [v for v in registry_versions if v not in registered]
    if unaudited:
        problems.append(f"version(s) {', '.join(unaudited)} are registered but have no "
                        "'registered' event")
    return problems


def _v(version: str | None) -> str:
    return f"v{version}" if version else "no version"


_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_when(text: str, option: str) -> datetime:
    """An ISO time (UTC unless it says otherwise) or a duration ago: 30s, 10m, 2h, 7d."""
    match = _RELATIVE.match(text.strip())
    if match:
        return datetime.now(UTC) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise InputError(f"{option}: expected an ISO time (2026-07-01T12:00:00) or a duration "
                         f"ago (10m, 2h, 7d), got '{text}'") from e
    return when if when.tzinfo else when.replace(tzinfo=UTC)
