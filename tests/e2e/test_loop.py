"""End to end, the whole loop as a platform team leaves it running: v1 trained on the source,
served by `mlrt serve` with capture and a canary, a load client sending shifted traffic (and
its labels through POST /feedback) that counts every answer, and real `mlrt watch --once`
cycles as subprocesses: drift in 2 consecutive windows retrains on source + labeled captures,
the challenger gets canary traffic, is promoted on its live labels, serving follows, and not
one request fails. A cycle inside the cooldown does not retrain even when a trigger fires.
The scenario (data, spec, load client) is tests/e2e/loop_scenario.py, shared with
benchmarks/loop.py."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from loop_scenario import NAME, SPEC, LoadClient, watch_once, write_project
from user import MLRT, mlrt, mlrt_env, user_dir, wait_for_urls  # tests/e2e/user.py

from serve_apps.local import free_port

pytestmark = pytest.mark.e2e
MAX_CYCLES = 8


def _audit(work) -> list[dict]:
    result = mlrt("audit", NAME, "--json", cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def _show(work, version: str) -> dict:
    result = mlrt("models", "show", NAME, version, cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_drift_retrain_canary_promote_with_zero_failed_requests(tmp_path_factory):
    work = user_dir(tmp_path_factory, "loop")
    write_project(work)
    result = mlrt("run", SPEC, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    port = free_port()
    server = subprocess.Popen([MLRT, "serve", SPEC, "--port", str(port)], cwd=work,
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                              env=mlrt_env())
    cycles = []
    try:
        [url] = wait_for_urls(server, 1, timeout_s=300)
        load = LoadClient(url).start()
        time.sleep(12)  # the first window is the last monitor.interval (10 s) of traffic
        while len(cycles) < MAX_CYCLES and "promote" not in [a for c in cycles
                                                             for a in c.actions]:
            cycles.append(watch_once(work))
            assert cycles[-1].returncode == 0, cycles[-1].text[-3000:]
            time.sleep(2)  # a window needs captured rows (flush_s 1)
        log = "\n---\n".join(c.text for c in cycles)
        actions = [a for c in cycles for a in c.actions]
        assert actions[-1] == "promote", log[-6000:]
        assert actions[:2] == ["none", "retrain"], log[-6000:]  # 1 of 2 windows, then 2 of 2
        assert "drift in 2 consecutive windows" in cycles[1].text
        assert "canary started: v2 @challenger gets 50% of traffic" in cycles[1].text
        canary = load.versions_since(cycles[1].ended)
        assert "2" in canary and "1" in canary, canary  # the challenger got canary traffic
        serving_v2 = load.serving("2")  # serving follows the alias

        # inside the cooldown: a trigger that fires (any live accuracy is below 1.01) is held
        held = watch_once(work, "--set",
                          "monitor.triggers.quality={metric: accuracy, below: 1.01, "
                          "min_labels: 10}")
        assert held.returncode == 0, held.text[-3000:]
        assert held.actions == ["none"], held.text[-3000:]
        assert "but the cooldown (1h) runs until" in held.text, held.text[-3000:]
        time.sleep(2)
        load.stop()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=120) == 0
    finally:
        if server.poll() is None:
            server.kill()

    answers = len(load.answers)
    assert answers > 300 and load.failures == [], (answers, load.failures[:5])
    assert load.feedback_failures == []
    before, n_before = load.accuracy("1", until=cycles[1].started)
    after, n_after = load.accuracy("2", since=serving_v2)
    assert n_before > 100 and n_after > 50
    assert before < 0.8 < 0.9 < after, (before, after)  # the retrain fixed what the shift broke

    kinds = [e["kind"] for e in _audit(work)]
    order = [kinds.index(k) for k in ("retrain_triggered", "canary_started", "promoted")]
    assert order == sorted(order), kinds
    assert kinds.count("retrain_triggered") == 1  # the cooldown cycle retrained nothing
    champion = _show(work, "@champion")
    assert champion["version"] == "2"
    assert champion["tags"]["mlrt.trigger"] == "drift"
    assert champion["tags"]["mlrt.parent_version"] == "1"
    assert champion["tags"]["mlrt.rollout"] == "promoted"
    evidence = champion["tags"]["mlrt.trigger.evidence"]
    assert evidence and _is_monitor_run(work, evidence)
    assert "appending" in cycles[1].text and "labeled captured rows" in cycles[1].text


def _is_monitor_run(work, run_id: str) -> bool:
    """The evidence names a real monitoring run in the project's MLflow store."""
    from mlflow.tracking import MlflowClient

    from runtime.registry import tracking

    tracking.use_store(str(work / ".mlrt"))
    return MlflowClient().get_run(run_id).data.tags.get("mlrt.kind") == "monitor"


# a challenger worse on purpose: it answers 1 whatever it is asked (the source is about half
# ones, so it passes a lowered gate; the shifted traffic is mostly zeros)
WORSE = ["--trigger", "manual", "--set", "model.estimator=sklearn.dummy.DummyClassifier",
         "--set", "model.params={strategy: constant, constant: 1}",
         "--set", "evaluate.gate.min=0.3", "--set", "monitor.retrain.data=source"]


def test_a_worse_challenger_is_rolled_back_by_a_restarted_watcher(tmp_path_factory):
    work = user_dir(tmp_path_factory, "loop-rollback")
    write_project(work)
    result = mlrt("run", SPEC, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    server = subprocess.Popen([MLRT, "serve", SPEC, "--port", str(free_port())], cwd=work,
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                              env=mlrt_env())
    watcher = None
    try:
        [url] = wait_for_urls(server, 1, timeout_s=300)
        load = LoadClient(url).start()
        time.sleep(5)
        started = watch_once(work, *WORSE)
        assert started.returncode == 0, started.text[-3000:]
        assert "canary started: v2 @challenger" in started.text, started.text[-3000:]

        # a long-running watcher that is mid-canary (it cannot decide yet: it waits for more
        # labels than will come) is killed without a chance to clean up
        watcher = subprocess.Popen([MLRT, "watch", SPEC, "--set",
                                    "monitor.rollout.min_labeled=1000000"], cwd=work,
                                   stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                   env=mlrt_env())
        seen = []
        for line in watcher.stderr:
            seen.append(line)
            if "canary v2:" in line and "labeled requests so far" in line:
                break
        watcher.kill()
        watcher.wait(timeout=60)
        assert any("canary v2:" in line for line in seen), "".join(seen)[-3000:]

        # the restarted watcher (the spec's min_labeled) finishes the same rollout
        cycles = []
        while len(cycles) < MAX_CYCLES and "rollback" not in [a for c in cycles
                                                              for a in c.actions]:
            time.sleep(2)
            cycles.append(watch_once(work))
            assert cycles[-1].returncode == 0, cycles[-1].text[-3000:]
        log = "\n---\n".join(c.text for c in cycles)
        assert cycles[-1].actions == ["rollback"], log[-6000:]
        assert "canary v2: live accuracy" in cycles[-1].text
        serving_v1 = load.serving("1")  # the rolled-back challenger gets no more traffic
        time.sleep(2)
        load.stop()
    finally:
        for proc in (watcher, server):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()

    assert len(load.answers) > 200 and load.failures == [], load.failures[:5]
    worse, n_worse = load.accuracy("2")
    kept, _ = load.accuracy("1", since=serving_v1)
    assert n_worse > 20 and worse < kept, (worse, kept)
    assert _show(work, "@champion")["version"] == "1"
    rejected = _show(work, "2")
    assert rejected["tags"]["mlrt.rolled_back"] == "true"
    assert rejected["tags"]["mlrt.rollout"] == "rejected"
    events = _audit(work)
    kinds = [e["kind"] for e in events]
    assert kinds.count("retrain_triggered") == 1 and "promoted" not in kinds, kinds
    ended = [e for e in events if e["kind"] == "canary_ended"]
    assert [e["data"]["outcome"] for e in ended] == ["rolled_back"]
    assert ended[0]["data"]["version"] == "2"
