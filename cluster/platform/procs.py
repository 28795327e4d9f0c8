"""Process, port and wait helpers for the platform stack (stdlib only).

Every process the stack starts is recorded with its pid *and* its start time (from /proc), so
`stop_process` never signals a pid that the kernel has since given to someone else's process:
other work shares this machine, and a broad `pkill`/`ray stop` would hit it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class PartError(RuntimeError):
    """A part of the stack failed to start or stop; names the part and the log to read."""

    def __init__(self, part: str, message: str, log: Path | str | None = None):
        self.part, self.message, self.log = part, message, str(log) if log else None
        self.started: list[dict] = []  # records a multi-process part had started, to stop
        where = f" (log: {self.log})" if self.log else ""
        super().__init__(f"{part}: {message}{where}")


# --- ports ------------------------------------------------------------------------------------

_taken: set[int] = set()  # ports handed out by this process, so two parts never get the same


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's pick), never one handed out before."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _taken:
            _taken.add(port)
            return port


def free_port_range(count: int, low: int = 20000, high: int = 40000) -> int:
    """The first port of `count` consecutive free ports (Ray's worker port range). Scans from
    a pid-dependent offset so that two stacks started at once rarely probe the same range."""
    start = low + (os.getpid() * 97) % (high - low - count)
    for base in range(start, high - count, count):
        ports = range(base, base + count)
        if not _taken.intersection(ports) and all(_is_free(p) for p in ports):
            _taken.update(ports)
            return base
    raise PartError("ports", f"no {count} consecutive free ports in {low}-{high}")


# --- processes --------------------------------------------------------------------------------


def start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: split after its closing parenthesis
    return stat.rsplit(")", 1)[1].split()[19]


def is_running(record: dict) -> bool:
    """True if the recorded process is still the one we started (same pid, same start time)."""
    return start_time(record["pid"]) == record["start_time"] and not _is_zombie(record["pid"])


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def start_process(part: str, argv: list[str], log: Path, *, env: dict | None = None,
                  user: str | None = None, cwd: Path | None = None,
                  stop_signal: str = "SIGTERM", group: bool = False) -> dict:
    """Start `argv` detached (own session: Ctrl-C on `make` does not reach it, and `group`
    processes can be stopped with all their children), output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, user=user, cwd=cwd,
                                    start_new_session=True)
        except OSError as exc:
            raise PartError(part, f"cannot run {argv[0]}: {exc}", log) from exc
    # Popen's child is reaped by nobody once this script exits; that is fine (init adopts it).
    return {"part": part, "pid": proc.pid, "start_time": start_time(proc.pid),
            "log": str(log), "stop_signal": stop_signal, "group": group}


def stop_process(record: dict, timeout: float = 30.0) -> str:
    """Stop one recorded process (its group if `group`): its stop signal, then SIGKILL after
    `timeout`. Returns what happened, for the progress line."""
    if not is_running(record):
        return "not running"
    pid, sig = record["pid"], getattr(signal, record["stop_signal"])
    _signal(pid, sig, record["group"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(record):
            return f"stopped ({record['stop_signal']})"
        time.sleep(0.2)
    _signal(pid, signal.SIGKILL, record["group"])
    return f"killed after {timeout:.0f} s"


def _signal(pid: int, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)  # the process is its group's leader (start_new_session)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def run(part: str, argv: list[str], log: Path, *, env: dict | None = None,
        timeout: float = 600, user: str | None = None, stdin=None) -> str:
    """Run a one-shot command to completion, its output appended to `log`; returns stdout.
    A non-zero exit raises PartError with the command's last output lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                              user=user, stdin=stdin)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PartError(part, f"{' '.join(argv[:3])} failed: {exc}", log) from exc
    with open(log, "a") as out:
        out.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise PartError(part, f"{argv[0]} exited {done.returncode}: {' | '.join(tail)}", log)
    return done.stdout


def wait_until(part: str, check: Callable[[], bool], timeout: float, what: str,
               log: Path | str | None = None, process: dict | None = None) -> None:
    """Poll `check` until it is true. Fails early if `process` (the thing being waited for)
    has exited: no point waiting two minutes for a server that crashed at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and not is_running(process):
            raise PartError(part, f"exited before {what}", log)
        time.sleep(0.5)
    raise PartError(part, f"not {what} after {timeout:.0f} s", log)
