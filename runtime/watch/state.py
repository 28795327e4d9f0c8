"""What the watcher remembers between cycles and restarts, and the lock that makes it one
watcher (and one retrain) at a time. Both live in storage through pyarrow filesystems:

    {storage}/watch/{model}/state.json     WatchState as JSON, replaced whole
    {storage}/watch/{model}/lock.json      who holds the lock: host, pid, since, token

The lock is held for a whole cycle (monitor, decide, retrain, rollout), so a second watcher
skips its cycle instead of deciding on a state the first one is about to change. Taking it:
locally the lock file is written under a temporary name and hard-linked to lock.json (a link
fails when the name exists: exactly one winner); on an object store (no conditional PUT in
pyarrow) it is written, then read back after a pause, and the writer whose token is there
holds it (a narrow race remains; run one watcher per model there). A lock whose holder is a
dead process on this host (pid gone, or reused by a younger process) is stale and taken over;
a lock of another host is never taken over: its path is printed, delete it by hand once that
watcher is known dead.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

from runtime.errors import MlrtError


class LockHeld(MlrtError):
    """Another watcher holds the lock of this model; this cycle does nothing."""


@dataclass
class WatchState:
    drift_windows: int = 0  # consecutive windows with drift (the champion's)
    last_window_end: str | None = None  # ISO: the next window starts here
    last_check: str | None = None  # ISO: the schedule fires when a cron time passed since
    last_retrain: str | None = None  # ISO: when the last retrain started (cooldown)
    retrain_day: str | None = None  # YYYY-MM-DD (UTC) that retrains_today counts
    retrains_today: int = 0
    retrain: dict | None = None  # a retrain under way: trigger, evidence, started
    pending: dict | None = None  # a rollout: version, phase (canary|approval), alias, started
    last_failure: dict | None = None  # time, trigger, reason of the last failed retrain
    cycles: int = 0
    history: list[dict] = field(default_factory=list)  # the last decisions (time, action, why)

    @classmethod
    def from_json(cls, data: dict) -> WatchState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict:
        return asdict(self)


HISTORY_KEEP = 20


def _filesystem(storage: str, model: str):
    from runtime.data.fs import open_uri

    return open_uri(f"{storage.rstrip('/')}/watch/{model}")


class StateStore:
    """The state and lock files of one model's watcher on one filesystem."""

    def __init__(self, fs, root: str):
        self.fs, self.root = fs, root.rstrip("/")
        self.local = fs.type_name == "local"
        self.token: str | None = None

    @classmethod
    def open(cls, storage: str, model: str) -> StateStore:
        return cls(*_filesystem(storage, model))

    @property
    def lock_path(self) -> str:
        return f"{self.root}/lock.json"

    def load(self) -> WatchState:
        text = self._read(f"{self.root}/state.json")
        return WatchState() if text is None else WatchState.from_json(json.loads(text))

    def save(self, state: WatchState) -> None:
        """Replace state.json whole: a temporary file renamed locally, one PUT elsewhere."""
        data = json.dumps(state.to_json(), indent=1, sort_keys=True).encode()
        self.fs.create_dir(self.root, recursive=True)
        target = f"{self.root}/state.json"
        if not self.local:
            with self.fs.open_output_stream(target) as f:
                f.write(data)
            return
        tmp = f"{self.root}/.state.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    def acquire(self) -> str | None:
        """Take the lock; return a note when a stale one was taken over. LockHeld when a live
        watcher (or one on another host) holds it."""
        self.fs.create_dir(self.root, recursive=True)
        token = uuid.uuid4().hex
        mine = {"host": socket.gethostname(), "pid": os.getpid(),
                "since": datetime.now(UTC).isoformat(timespec="seconds"), "token": token,
                "started": _process_start(os.getpid())}
        note = None
        for _ in range(3):
            if self._create(mine):
                self.token = token
                return note
            holder = self._holder()
            if holder is None:
                continue  # released between our attempt and the read
            if not _stale(holder):
                where = f"{holder.get('host')}:{holder.get('pid')}"
                extra = ("" if holder.get("host") == socket.gethostname() else
                         f"; it runs on another host: if that watcher is dead, delete "
                         f"{self.lock_path}")
                raise LockHeld(f"another watcher ({where}, since {holder.get('since')}) holds "
                               f"the lock of this model{extra}")
            note = (f"took over the lock of watcher {holder.get('host')}:{holder.get('pid')} "
                    f"(since {holder.get('since')}): that process is gone")
            self.fs.delete_file(self.lock_path)
        raise LockHeld(f"could not take the lock {self.lock_path}: other watchers raced for it")

    def release(self) -> None:
        holder = self._holder()
        if self.token is not None and holder is not None and holder.get("token") == self.token:
            self.fs.delete_file(self.lock_path)
        self.token = None

    def _create(self, mine: dict) -> bool:
        text = json.dumps(mine, sort_keys=True)
        if self.local:
            tmp = Path(self.root) / f".lock.{mine['token']}.tmp"
            tmp.write_text(text)
            try:
                os.link(tmp, self.lock_path)
                return True
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
        if self._holder() is not None:
            return False
        with self.fs.open_output_stream(self.lock_path) as f:
            f.write(text.encode())
        time.sleep(0.5)  # a racing writer's PUT lands in this pause; the last one wins
        holder = self._holder()
        return holder is not None and holder.get("token") == mine["token"]

    def _holder(self) -> dict | None:
        text = self._read(self.lock_path)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return {}  # a torn or hand-edited lock: treated as stale below

    def _read(self, path: str) -> str | None:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read().decode()
        except FileNotFoundError:
            return None
        except OSError as e:
            if "not found" in str(e).lower() or "no such file" in str(e).lower():
                return None
            raise


def _process_start(pid: int) -> float | None:
    try:
        return os.stat(f"/proc/{pid}").st_ctime
    except OSError:
        return None


def _stale(holder: dict) -> bool:
    """A lock is stale when its holder is a process of this host that is gone: its pid no
    longer exists, or now belongs to a process started after the lock's holder."""
    if not holder:
        return True
    if holder.get("host") != socket.gethostname() or not str(holder.get("pid", "")).isdigit():
        return False
    pid = int(holder["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    started, now_started = holder.get("started"), _process_start(pid)
    return started is not None and now_started is not None and now_started > started + 1.0
