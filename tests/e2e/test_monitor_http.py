"""End to end over HTTP: `mlrt serve` with `serve.capture` on, same-distribution requests and
then shifted ones, labels through POST /feedback, then `mlrt monitor --json` on each half:
the first says no drift (with quality from the labels), the second names exactly the shifted
features."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sklearn.datasets import load_breast_cancer
from user import LOGREG, MLRT, mlrt, user_dir, wait_for_urls  # tests/e2e/user.py

from serve_apps.local import free_port

pytestmark = pytest.mark.e2e
SHIFTED = ("mean texture", "worst area")
ROWS = 400


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _send(url: str, rows: list[dict]) -> list[str]:
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda r: _post(f"{url}/predict", {"instances": [r]}), rows))
    return [a["request_id"] for a in answers]


def _rows(seed: int, shift=()) -> tuple[list[dict], list]:
    data = load_breast_cancer(as_frame=True).frame
    frame = data.sample(ROWS, replace=True, random_state=seed).reset_index(drop=True)
    target = frame.pop("target")
    for name in shift:
        frame[name] = frame[name] + data[name].std()
    return frame.to_dict("records"), target.tolist()


def test_capture_then_monitor_over_http(tmp_path_factory):
    work = user_dir(tmp_path_factory, "monitor-http")
    result = mlrt("run", "jobs/breast_cancer.yaml", *LOGREG, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    port = free_port()
    proc = subprocess.Popen([MLRT, "serve", "jobs/breast_cancer.yaml", "--port", str(port),
                             "--set", "serve.capture={sample: 1.0, flush_s: 1}"], cwd=work,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        [url] = wait_for_urls(proc, 1, timeout_s=300)
        t0 = datetime.now(UTC)
        rows, labels = _rows(1)
        ids = _send(url, rows)
        _post(f"{url}/feedback", {"labels": [{"request_id": i, "label": int(v)}
                                             for i, v in zip(ids[:200], labels[:200],
                                                             strict=True)]})
        time.sleep(1.5)
        t1 = datetime.now(UTC)
        _send(url, _rows(2, SHIFTED)[0])
        time.sleep(1.5)
        t2 = datetime.now(UTC)
        proc.send_signal(signal.SIGTERM)  # graceful: the capture queue is flushed
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    same = _monitor(work, t0, t1)
    assert same["rows"] == ROWS and same["drift"]["detected"] is False
    assert same["quality"]["labeled"] == 200 and same["quality"]["coverage"] == 0.5
    assert 0.8 < same["quality"]["metrics"]["accuracy"] <= 1.0
    assert same["latency"]["p99_ms"] is not None
    shifted = _monitor(work, t1, t2)
    assert shifted["rows"] == ROWS
    assert sorted(shifted["drift"]["drifted_features"]) == sorted(SHIFTED)


def _monitor(work, since: datetime, until: datetime) -> dict:
    result = mlrt("monitor", "jobs/breast_cancer.yaml", "--since", since.isoformat(),
                  "--until", until.isoformat(), "--set", "monitor.drift.min_rows=100", "--json",
                  cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
