"""Watcher state and lock round trips on the local filesystem and pyarrow's in-memory one
(the object-store code path), and the take-over of a dead watcher's lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pyarrow.fs import _MockFileSystem

from runtime.watch.state import LockHeld, StateStore, WatchState


def stores(tmp_path):
    yield StateStore.open(str(tmp_path / "store"), "m")
    yield StateStore(_MockFileSystem(), "bucket/watch/m")


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_state_round_trip(tmp_path, kind):
    store = dict(zip(["local", "memory"], stores(tmp_path), strict=True))[kind]
    assert store.load() == WatchState()
    state = WatchState(drift_windows=2, last_retrain="2026-12-01T12:00:00+00:00",
                       pending={"version": "3", "phase": "canary"}, retrains_today=1)
    store.save(state)
    assert store.load() == state


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_lock_one_holder(tmp_path, kind, monkeypatch):
    store = dict(zip(["local", "memory"], stores(tmp_path), strict=True))[kind]
    monkeypatch.setattr("runtime.watch.state.time.sleep", lambda s: None)
    assert store.acquire() is None
    other = StateStore(store.fs, store.root)
    with pytest.raises(LockHeld, match=f"{socket.gethostname()}:{os.getpid()}"):
        other.acquire()
    other.release()  # not its lock: stays
    with pytest.raises(LockHeld):
        other.acquire()
    store.release()
    assert other.acquire() is None
    other.release()


def test_a_dead_watchers_lock_is_taken_over(tmp_path):
    store = StateStore.open(str(tmp_path / "store"), "m")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.fs.create_dir(store.root, recursive=True)
    with open(store.lock_path, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": dead.pid, "since": "earlier",
                   "token": "old", "started": 0}, f)
    note = store.acquire()
    assert note and f"{dead.pid}" in note and "gone" in note
    assert json.loads(Path(store.lock_path).read_text())["pid"] == os.getpid()
    store.release()


def test_another_hosts_lock_is_never_taken(tmp_path):
    store = StateStore.open(str(tmp_path / "store"), "m")
    store.fs.create_dir(store.root, recursive=True)
    with open(store.lock_path, "w") as f:
        json.dump({"host": "elsewhere", "pid": 1, "since": "earlier", "token": "x"}, f)
    with pytest.raises(LockHeld, match="another host: if that watcher is dead, delete"):
        store.acquire()
