"""End to end: `mlrt watch SPEC --once --trigger manual` as a user runs it: a real retrain
through the driver on the source plus labeled captured rows, a failed retrain recorded with
the champion untouched, a passing one made @challenger (not champion) with its trigger tags
and audit events, and the next cycle waiting for the canary's labels instead of retraining.
No monitor and no served traffic are needed: the captured rows are written in the capture
layout (runtime.monitoring.layout) as the replicas write them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_breast_cancer
from user import mlrt, user_dir  # tests/e2e/user.py

from runtime.monitoring.layout import captures_root, day_dir, file_name, labels_root

pytestmark = pytest.mark.e2e
NAME = "watch-bc"
CAPTURED = 40


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = user_dir(tmp_path_factory, "watch-user")
    frame = load_breast_cancer(as_frame=True).frame
    frame.to_parquet(work / "bc.parquet")
    spec = {
        "name": NAME, "task": "classification", "storage": ".mlrt",
        "data": {"source": {"kind": "parquet", "path": "bc.parquet"}, "target": "target",
                 "split": {"test": 0.3, "validation": 0.0, "seed": 3},
                 "preprocess": [{"op": "standard_scale"}]},
        "model": {"kind": "sklearn", "estimator": "sklearn.linear_model.LogisticRegression",
                  "params": {"max_iter": 500}},
        "evaluate": {"gate": {"metric": "accuracy", "min": 0.5}},
        "serve": {"canary": {"alias": "challenger", "weight": 0.1}},
        "monitor": {"interval": "10m",
                    "retrain": {"data": "source+captures", "cooldown": "6h"},
                    "rollout": {"canary_weight": 0.1, "min_labeled": 50}},
    }
    (work / "watch.yaml").write_text(yaml.safe_dump(spec))
    _write_captures(work, frame)
    return work


def _write_captures(work: Path, frame: pd.DataFrame) -> None:
    """CAPTURED served rows and their labels, as a replica and POST /feedback store them."""
    now = datetime.now(UTC)
    rows = frame.drop(columns="target").head(CAPTURED).astype("float64")
    meta = pd.DataFrame({
        "request_id": [f"r{i}" for i in range(CAPTURED)], "time": pd.Timestamp(now),
        "model": NAME, "version": "1", "alias": "champion", "arm": "stable",
        "prediction": "1", "probabilities": [[0.5, 0.5]] * CAPTURED, "latency_ms": 1.0})
    storage = str(work / ".mlrt")
    for root, table in (
            (captures_root(storage, NAME), pd.concat([meta, rows], axis=1)),
            (labels_root(storage, NAME), pd.DataFrame({
                "request_id": meta["request_id"],
                "label": frame["target"].head(CAPTURED).astype(str),
                "time": pd.Timestamp(now)}))):
        folder = Path(day_dir(root, now))
        folder.mkdir(parents=True)
        table.to_parquet(folder / file_name("test-writer", pd.Timestamp(now).value, 0))


def _events(workdir: Path) -> list[dict]:
    result = mlrt("audit", NAME, "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _show(workdir: Path, version: str) -> dict:
    result = mlrt("models", "show", NAME, version, cwd=workdir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_champion(workdir):
    result = mlrt("run", "watch.yaml", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "569 rows" in result.stderr


def test_a_failed_retrain_is_recorded_and_leaves_the_champion(workdir):
    result = mlrt("watch", "watch.yaml", "--once", "--trigger", "manual",
                  "--set", "evaluate.gate.min=0.9999", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "retrain failed (GateFailed): gate failed" in result.stderr
    assert "@champion untouched" in result.stderr
    assert _show(workdir, "@champion")["version"] == "1"
    triggered, *_, failed = _events(workdir)[2:]
    assert triggered["kind"] == "retrain_triggered" and triggered["data"]["trigger"] == "manual"
    assert failed["kind"] == "failed" and failed["data"]["event"] == triggered["seq"]
    assert "gate failed" in failed["data"]["error"]
    state = json.loads((workdir / ".mlrt/watch" / NAME / "state.json").read_text())
    assert state["last_failure"]["trigger"] == "manual" and state["pending"] is None
    assert not (workdir / ".mlrt/watch" / NAME / "lock.json").exists()


def test_a_manual_retrain_becomes_the_challenger(workdir):
    before = len(_events(workdir))
    result = mlrt("watch", "watch.yaml", "--once", "--trigger", "manual", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"appending {CAPTURED} labeled captured rows" in result.stderr
    assert f"{569 + CAPTURED} rows" in result.stderr  # the same checks and split saw them
    assert "canary started: v3 @challenger gets 10% of traffic" in result.stderr
    challenger = _show(workdir, "@challenger")
    assert challenger["version"] == "3"
    assert challenger["tags"]["mlrt.trigger"] == "manual"
    assert "mlrt.trigger.evidence" in challenger["tags"]  # the monitoring run, when one ran
    assert challenger["tags"]["mlrt.parent_version"] == "1"
    assert _show(workdir, "@champion")["version"] == "1"
    kinds = [(e["kind"], e["data"].get("alias")) for e in _events(workdir)[before:]]
    assert kinds == [("retrain_triggered", None), ("registered", None),
                     ("alias_moved", "challenger"), ("canary_started", "challenger")]


def test_the_next_cycle_waits_for_the_canary_instead_of_retraining(workdir):
    before = len(_events(workdir))
    result = mlrt("watch", "watch.yaml", "--once", "--trigger", "manual", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "v3 is in rollout (canary); no retrain before it ends" in result.stderr
    assert len(_events(workdir)) == before
    state = json.loads((workdir / ".mlrt/watch" / NAME / "state.json").read_text())
    assert state["pending"]["version"] == "3" and state["pending"]["phase"] == "canary"


def test_a_bad_monitor_section_exits_2_before_ray(workdir):
    result = mlrt("watch", "watch.yaml", "--once", "--set", "monitor.retrain.cooldown=soon",
                  cwd=workdir, timeout=60)
    assert result.returncode == 2
    assert "monitor.retrain.cooldown: expected a duration" in result.stderr
    assert "[ray]" not in result.stderr


def test_sigterm_ends_the_loop_between_cycles(workdir):
    import signal
    import subprocess

    from user import MLRT

    proc = subprocess.Popen([MLRT, "watch", "watch.yaml", "--set", "monitor.interval=10m"],
                            cwd=workdir, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stderr:  # the first cycle ran (the canary still waits for labels)
            seen.append(line)
            if "canary v3: 0 of 50 labeled requests" in line:
                break
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(seen) + (rest or "")
    assert "SIGTERM: stopping after this cycle" in rest and "[watch] stopped" in rest


def test_only_manual_can_be_triggered_by_hand(workdir):
    result = mlrt("watch", "watch.yaml", "--once", "--trigger", "drift", cwd=workdir,
                  timeout=60)
    assert result.returncode == 2
    assert "--trigger: only 'manual' can be given by hand" in result.stderr
