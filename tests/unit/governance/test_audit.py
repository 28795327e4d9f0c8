"""The audit trail on real files: the chain, what --verify catches, --at replays, concurrent
writers, the object-store layout (pyarrow's in-memory filesystem) and its fork report."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyarrow.fs import _MockFileSystem

from runtime.errors import AuditError, InputError
from runtime.governance import audit
from runtime.governance.audit_store import AuditStore

M = "m"


def _moves(storage: str) -> list[audit.Event]:
    """v1 registered and moved to @champion, v2 promoted, then rolled back."""
    return [
        audit.record_event(storage, M, audit.REGISTERED, "ci", None, version="1"),
        audit.record_event(storage, M, audit.ALIAS_MOVED, "ci", None, alias="champion",
                           **{"from": None, "to": "1"}),
        audit.record_event(storage, M, audit.REGISTERED, "ci", None, version="2"),
        audit.record_event(storage, M, audit.PROMOTED, "ann", "better", alias="champion",
                           **{"from": "1", "to": "2"}),
        audit.record_event(storage, M, audit.ROLLED_BACK, "bob", "slower", alias="champion",
                           **{"from": "2", "to": "1"}),
    ]


def _files(storage: Path) -> list[Path]:
    return sorted((storage / "audit" / M).glob("*.json"))


def test_events_chain_and_verify_intact(tmp_path):
    written = _moves(str(tmp_path))
    trail = audit.load_trail(str(tmp_path), M)
    assert trail.problems == []
    assert [e.to_json() for e in trail.events] == [e.to_json() for e in written]
    assert [e.seq for e in trail.events] == [0, 1, 2, 3, 4]
    assert trail.events[0].prev == "" and all(
        b.prev == a.hash for a, b in zip(trail.events, trail.events[1:], strict=False))
    promoted = trail.events[3]
    assert promoted.actor == "ann" and promoted.reason == "better"
    assert promoted.data == {"alias": "champion", "from": "1", "to": "2"}
    assert promoted.when.tzinfo is not None  # UTC ISO
    assert [p.name for p in _files(tmp_path)][0] == "000000000000.json"


def test_verify_catches_an_edited_event(tmp_path):
    _moves(str(tmp_path))
    path = _files(tmp_path)[3]
    event = json.loads(path.read_text())
    event["actor"] = "mallory"
    path.write_text(json.dumps(event))
    problems = audit.load_trail(str(tmp_path), M).problems
    assert problems[0].startswith("event #3 (promoted") and "was edited" in problems[0]


def test_verify_catches_an_edit_with_its_hash_recomputed(tmp_path):
    _moves(str(tmp_path))
    path = _files(tmp_path)[1]
    event = json.loads(path.read_text())
    event["data"]["to"] = "2"
    event["hash"] = audit.event_hash(event)
    path.write_text(json.dumps(event))
    problems = audit.load_trail(str(tmp_path), M).problems
    assert problems == ["event #2 (registered, " + json.loads(_files(tmp_path)[2].read_text())[
        "time"] + ") does not follow event #1: an event before it was edited, deleted or "
        "reordered"]


def test_verify_catches_a_deleted_event(tmp_path):
    _moves(str(tmp_path))
    _files(tmp_path)[2].unlink()
    assert audit.load_trail(str(tmp_path), M).problems == ["event #2 is missing (deleted?)"]


def test_verify_catches_reordered_events(tmp_path):
    _moves(str(tmp_path))
    a, b = _files(tmp_path)[3], _files(tmp_path)[4]
    text_a, text_b = a.read_text(), b.read_text()
    a.write_text(text_b)
    b.write_text(text_a)
    problems = audit.load_trail(str(tmp_path), M).problems
    assert problems[0] == ("event #3 (000000000003.json) holds event #4: events were reordered "
                           "or renamed")


def test_verify_catches_a_file_that_is_not_an_event(tmp_path):
    _moves(str(tmp_path))
    _files(tmp_path)[0].write_text("{half")
    problems = audit.load_trail(str(tmp_path), M).problems
    assert problems[0].startswith("event #0 (000000000000.json) is not valid JSON")


def test_aliases_at_across_promote_and_rollback(tmp_path):
    events = _moves(str(tmp_path))
    before_all = events[0].when - timedelta(seconds=1)
    assert audit.aliases_at(events, before_all) == {}
    assert audit.aliases_at(events, events[1].when) == {"champion": "1"}
    assert audit.aliases_at(events, events[3].when) == {"champion": "2"}
    assert audit.aliases_at(events, events[4].when) == {"champion": "1"}
    assert audit.aliases_at(events) == {"champion": "1"}


def test_a_failed_action_is_recorded_and_not_replayed(tmp_path):
    storage = str(tmp_path)
    _moves(storage)
    with pytest.raises(RuntimeError), audit.recorded(storage, M, audit.PROMOTED, "ann", "try",
                                                     alias="champion", **{"from": "1",
                                                                          "to": "9"}):
        raise RuntimeError("registry down")
    trail = audit.load_trail(storage, M)
    assert trail.events[-1].kind == audit.FAILED
    assert trail.events[-1].data == {"event": 5, "error": "RuntimeError: registry down"}
    assert audit.aliases_at(trail.events) == {"champion": "1"}


def test_decisions_need_a_reason_and_nothing_is_written_without(tmp_path):
    for kind in (audit.PROMOTED, audit.ROLLED_BACK, audit.APPROVED, audit.REJECTED):
        with pytest.raises(InputError, match="--reason: required"):
            audit.record_event(str(tmp_path), M, kind, "ann", "  ", version="1")
    with pytest.raises(InputError, match="unknown event kind"):
        audit.record_event(str(tmp_path), M, "deleted_everything", "ann", "x")
    assert not (tmp_path / "audit").exists()


def test_a_model_name_cannot_leave_the_audit_folder(tmp_path):
    with pytest.raises(InputError, match="model name: '../x'"):
        audit.load_trail(str(tmp_path), "../x")


def test_an_unwritable_trail_fails_loudly(tmp_path):
    (tmp_path / "audit").write_text("a file where the folder should be")
    with pytest.raises(AuditError, match="cannot"):
        audit.record_event(str(tmp_path), M, audit.SERVED, "ann", None, version="1")


def test_concurrent_writers_lose_no_event(tmp_path):
    storage = str(tmp_path)

    def write(i: int) -> None:
        for j in range(10):
            audit.record_event(storage, M, audit.SERVED, f"w{i}", None, n=j)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trail = audit.load_trail(storage, M)
    assert trail.problems == []
    assert sorted((e.actor, e.data["n"]) for e in trail.events) == sorted(
        (f"w{i}", j) for i in range(4) for j in range(10))
    assert not list((tmp_path / "audit" / M).glob(".*.tmp"))  # no leftovers


def _object_store(monkeypatch) -> _MockFileSystem:
    """pyarrow's in-memory filesystem stands in for an object store: not local, so the store
    takes its object-store layout (unique names, no links)."""
    fs = _MockFileSystem()
    monkeypatch.setattr(AuditStore, "open", classmethod(
        lambda cls, storage, model: cls(fs, f"bucket/{storage}/audit/{model}")))
    return fs


def test_object_store_layout_chains_and_verifies(monkeypatch):
    fs = _object_store(monkeypatch)
    events = _moves("store")
    store = AuditStore(fs, "bucket/store/audit/m")
    names = [n for ns in store.names().values() for n in ns]
    assert len(names) == 5 and all(
        n == f"{e.seq:012d}-{e.hash[:16]}.json" for n, e in zip(names, events, strict=True))
    trail = audit.load_trail("store", M)
    assert trail.problems == [] and audit.aliases_at(trail.events) == {"champion": "1"}


def test_a_race_on_an_object_store_is_reported_as_a_fork(monkeypatch):
    fs = _object_store(monkeypatch)
    _moves("store")
    store = AuditStore(fs, "bucket/store/audit/m")
    tail = store.read(store.names()[4][0])
    # a second writer that read the same tail writes #5 beside ours: both objects are kept
    for actor in ("ann", "bob"):
        event = {"seq": 5, "time": datetime.now(UTC).isoformat(), "model": M,
                 "kind": audit.SERVED, "actor": actor, "reason": None, "data": {},
                 "prev": json.loads(tail)["hash"]}
        event["hash"] = audit.event_hash(event)
        store._write(5, event["hash"], audit.canonical(event))
    trail = audit.load_trail("store", M)
    assert len(trail.problems) == 1 and "event #5: 2 events claim this number" in \
        trail.problems[0] and "concurrently" in trail.problems[0]
    audit.record_event("store", M, audit.SERVED, "carl", None)  # appends after the fork
    after = audit.load_trail("store", M)
    assert after.events[-1].seq == 6 and after.events[-1].prev == after.events[5].hash


def test_reconcile_names_what_the_registry_holds_unaudited(tmp_path):
    events = _moves(str(tmp_path))
    assert audit.reconcile(events, {"champion": "1"}, ["1", "2"]) == []
    problems = audit.reconcile(events, {"champion": "2", "staging": "1"}, ["1", "2", "3"])
    assert problems == [
        "alias 'champion' is on v2 in the registry, the trail says v1: moved outside mlrt, or "
        "its event was lost",
        "alias 'staging' is on v1 in the registry, the trail says no version: moved outside "
        "mlrt, or its event was lost",
        "version(s) 3 are registered but have no 'registered' event"]


def test_times_and_actors():
    now = datetime.now(UTC)
    assert abs((audit.parse_when("10m", "--since") - (now - timedelta(minutes=10)))
               .total_seconds()) < 5
    assert audit.parse_when("2026-07-01T12:00:00", "--at") == datetime(2026, 7, 1, 12,
                                                                       tzinfo=UTC)
    assert audit.parse_when("2026-07-01T12:00:00Z", "--at").tzinfo is not None
    with pytest.raises(InputError, match="--at: expected an ISO time"):
        audit.parse_when("yesterday", "--at")
    actor = audit.api_key_actor("s3cret-key")
    assert actor.startswith("api-key:") and "s3cret" not in actor
    assert audit.api_key_actor("s3cret-key") == actor


def test_actor_defaults_to_mlrt_actor_then_the_os_user(tmp_path, monkeypatch):
    monkeypatch.setenv("MLRT_ACTOR", "ci-bot")
    assert audit.record_event(str(tmp_path), M, audit.SERVED).actor == "ci-bot"
    monkeypatch.delenv("MLRT_ACTOR")
    import getpass

    assert audit.record_event(str(tmp_path), M, audit.SERVED).actor == getpass.getuser()
