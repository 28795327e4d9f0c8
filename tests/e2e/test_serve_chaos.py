"""End to end: a replica SIGKILLed under load costs no answered request. `mlrt serve` with two
replicas behind the HAProxy fast path, a client at concurrency 8 counting every response, one
replica process killed mid-run; Serve starts a new one, no request gets an error status, and
connections dropped without an answer stay under 0.1% (printed; zero is the target of issue
17, not met yet)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest
from load import Load  # tests/load.py
from user import LOGREG, MLRT, mlrt, user_dir, wait_for_urls  # tests/e2e/user.py

from serve_apps.local import free_port

pytestmark = pytest.mark.e2e
CONCURRENCY = 8
ROW = [1.0] * 30


def _replicas(root: int) -> list[psutil.Process]:
    """The Serve replica worker processes under `mlrt serve` (its local Ray runs as its
    children; a replica's process title names its deployment)."""
    found = []
    for proc in psutil.Process(root).children(recursive=True):
        try:
            if "ServeReplica" in " ".join(proc.cmdline()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_a_replica_killed_under_load_costs_no_request(tmp_path_factory):
    workdir = user_dir(tmp_path_factory, "chaos-user")
    trained = mlrt("run", "jobs/breast_cancer.yaml", *LOGREG, cwd=workdir)
    assert trained.returncode == 0, trained.stderr[-3000:]
    port = free_port()
    proc = subprocess.Popen(
        [MLRT, "serve", "jobs/breast_cancer.yaml", "--port", str(port),
         "--set", "serve.replicas={min: 2, max: 2}", "--set", "serve.cpus_per_replica=0.25"],
        cwd=workdir, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        [url] = wait_for_urls(proc, 1, timeout_s=300)
        deadline = time.monotonic() + 120
        while len(_replicas(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        replicas = _replicas(proc.pid)
        assert len(replicas) == 2, "two replicas did not start"
        with Load(url, ROW, threads=CONCURRENCY) as load:
            time.sleep(5)
            before_kill = load.ok
            os.kill(replicas[0].pid, signal.SIGKILL)
            time.sleep(15)  # the kill, HAProxy marking it down, Serve's replacement
        assert before_kill > 0 and load.ok > before_kill
        failed = load.failed
        # Not yet zero (issue 17, item 2). CI runs saw 3 of 9,522 connections closed without an
        # answer, and once 1 of 14,568 requests answered 500 by HAProxy, while Serve replaced
        # the replica. Traced on 2026-12-03 (HAProxy's own log, per-request timings): the lost
        # ones are the 1-3 requests in flight on the killed replica (sent 10-35 ms before the
        # kill, failing ~0.1 s after it); one was a 200 whose body never came (HAProxy `SD--`),
        # the others were closed with no HAProxy log line; none came from the HAProxy reload
        # ~1-2 s later, and `retries 10` changed nothing. Every request sent after the kill was
        # answered. Held under 0.1% (without HAProxy's retry-on, 7 of 1,206 failed: 0.6%).
        answered = [f for f in failed if f[0] is not None]  # a 4xx/5xx from Serve or HAProxy
        dropped = [f for f in failed if f[0] is None]
        print(f"chaos: of {len(load.results)} requests, {len(answered)} got an error status "
              f"{answered[:3]}, {len(dropped)} lost their connection {dropped[:3]}")
        assert len(failed) <= len(load.results) / 1000, failed[:5]
        deadline = time.monotonic() + 120  # Serve replaces the killed replica
        while len(_replicas(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert len(_replicas(proc.pid)) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
