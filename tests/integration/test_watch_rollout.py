"""Integration: watch cycles on the session's Ray and a real MLflow store, with the monitor's
report given by the test (the monitor lands in another branch; its documented JSON is the
contract, and runtime.watch.evidence.monitor_report is the one place the watcher asks for it).
Drift over min_windows retrains with the monitoring run as evidence; a challenger as good on
live labels is promoted, a worse one rolled back with the champion unchanged; the cooldown
holds an automatic trigger; manual approval waits for a person."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from factories import BREAST_CANCER, LOGISTIC, spec_data

from runtime.governance import approvals, audit
from runtime.pipeline.driver import run_job
from runtime.registry import tracking, versions
from runtime.spec import parse_spec
from runtime.watch import evidence
from runtime.watch.cycle import run_cycle
from runtime.watch.state import StateStore

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _spec(storage, name: str, **set_):
    raw = spec_data(storage, name, data=BREAST_CANCER, model=LOGISTIC,
                    evaluate={"gate": {"metric": "accuracy", "min": 0.5}},
                    serve={"canary": {"weight": 0.2}},
                    monitor={"triggers": {"drift": {"min_windows": 2}},
                             "retrain": {"cooldown": "1h", "max_per_day": 5},
                             "rollout": {"min_labeled": 50}},
                    set=set_)
    return parse_spec(raw)


def _report(drift: bool, per_version: dict[str, tuple[int, float]] | None = None,
            run: str = "monitor-run-1") -> dict:
    versions_ = [{"version": v, "rows": n, "quality": {"labeled": n, "coverage": 1.0,
                                                       "metrics": {"accuracy": acc}}}
                 for v, (n, acc) in (per_version or {}).items()]
    return {"model": "m", "version": "1", "rows": 500, "status": "drift" if drift else "ok",
            "drift": {"detected": drift, "features": {"mean radius": {
                "method": "jensen_shannon", "score": 0.4 if drift else 0.01,
                "threshold": 0.1, "drifted": drift}}},
            "prediction_drift": None,
            "quality": {"labeled": 0, "coverage": 0.0, "metrics": {}},
            "versions": versions_, "mlflow_run": run}


@pytest.fixture
def reports(monkeypatch):
    """The reports the next cycles' monitor returns, in order."""
    queue: list[dict] = []
    monkeypatch.setattr(evidence, "monitor_report", lambda *a, **k: queue.pop(0))
    return queue


def _kinds(spec, since: int = 0) -> list[str]:
    return [e.kind for e in audit.load_trail(spec.storage, spec.name).events[since:]]


def test_drift_retrain_canary_promote_then_rollback(ray_session, tmp_path, reports):
    spec = _spec(tmp_path / "store", "it-watch")
    run_job(spec, echo=lambda s: None)
    reports += [_report(True), _report(True, run="monitor-run-2")]
    assert run_cycle(spec, now=T0).action == "none"  # 1 of 2 windows
    decision = run_cycle(spec, now=T0 + timedelta(minutes=10))
    assert (decision.action, decision.trigger) == ("retrain", "drift")
    challenger = versions.version_by_alias(spec.name, "challenger")
    assert challenger.version == "2"
    assert challenger.tags["mlrt.trigger"] == "drift"
    assert challenger.tags["mlrt.trigger.evidence"] == "monitor-run-2"
    assert versions.version_by_alias(spec.name, "champion").version == "1"

    # too few labels, then a restarted watcher (fresh process state: only storage) decides
    reports += [_report(False, {"2": (10, 0.99), "1": (100, 0.9)}),
                _report(False, {"2": (60, 0.95), "1": (300, 0.93)})]
    assert run_cycle(spec, now=T0 + timedelta(minutes=20)).action == "wait"
    assert StateStore.open(spec.storage, spec.name).load().pending["version"] == "2"
    seen = len(_kinds(spec))
    assert run_cycle(spec, now=T0 + timedelta(minutes=30)).action == "promote"
    assert versions.version_by_alias(spec.name, "champion").version == "2"
    assert _kinds(spec, seen) == ["canary_ended", "promoted"]
    ended = audit.load_trail(spec.storage, spec.name).events[seen]
    assert ended.data["outcome"] == "promoted" and ended.data["live"]["challenger"] == 0.95

    # inside the cooldown a drift trigger is held; a manual one is not
    reports += [_report(True), _report(True)]
    run_cycle(spec, now=T0 + timedelta(minutes=40))
    held = run_cycle(spec, now=T0 + timedelta(minutes=50))
    assert held.action == "none" and held.held and "cooldown" in held.reason
    reports.append(_report(False))
    assert run_cycle(spec, manual=True, now=T0 + timedelta(minutes=55)).action == "retrain"
    assert versions.version_by_alias(spec.name, "challenger").version == "3"
    reports.append(_report(False, {"3": (80, 0.70), "2": (400, 0.95)}))
    seen = len(_kinds(spec))
    assert run_cycle(spec, now=T0 + timedelta(minutes=60)).action == "rollback"
    assert _kinds(spec, seen) == ["canary_ended"]
    rejected = versions.get_version(spec.name, "3")
    assert rejected.tags[versions.ROLLED_BACK_TAG] == "true"
    assert rejected.tags["mlrt.rollout"] == "rejected"
    assert versions.version_by_alias(spec.name, "champion").version == "2"
    assert StateStore.open(spec.storage, spec.name).load().pending is None


def test_manual_approval_waits_for_a_person(ray_session, tmp_path, reports):
    spec = _spec(tmp_path / "store", "it-watch-approval", **{"register.approval": "manual"})
    run_job(spec, echo=lambda s: None)
    approvals.approve(spec.storage, spec.name, "1", "ci", "first version")
    reports.append(_report(False))
    assert run_cycle(spec, manual=True, now=T0).action == "retrain"
    assert _kinds(spec)[-1] == "awaiting_approval"
    assert approvals.awaiting_approval(spec.name, "2")
    assert run_cycle(spec, now=T0 + timedelta(minutes=10)).action == "wait"
    assert versions.version_by_alias(spec.name, "champion").version == "1"
    approvals.approve(spec.storage, spec.name, "2", "ci", "reviewed")
    assert run_cycle(spec, now=T0 + timedelta(minutes=20)).action == "done"
    tracking.use_store(spec.storage)
    assert versions.version_by_alias(spec.name, "champion").version == "2"


def test_a_watcher_killed_mid_retrain_is_taken_over_and_the_retrain_runs_once_more(
        ray_session, tmp_path, reports):
    import json
    import os
    import socket
    import subprocess
    import sys
    from dataclasses import replace

    spec = _spec(tmp_path / "store", "it-watch-restart")
    run_job(spec, echo=lambda s: None)
    store = StateStore.open(spec.storage, spec.name)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    os.makedirs(store.root, exist_ok=True)
    with open(store.lock_path, "w") as f:  # what a watcher killed during its retrain leaves
        json.dump({"host": socket.gethostname(), "pid": dead.pid, "since": "earlier",
                   "token": "dead", "started": 0}, f)
    state = replace(store.load(), last_retrain=T0.isoformat(), retrain_day="2026-12-01",
                    retrains_today=1, retrain={"trigger": "drift", "reason": "drift in 2 "
                                               "consecutive windows", "evidence": "monitor-run-9",
                                               "started": T0.isoformat()})
    store.save(state)
    lines: list[str] = []
    decision = run_cycle(spec, echo=lines.append, now=T0 + timedelta(minutes=5))
    assert (decision.action, decision.trigger) == ("retrain", "drift")
    assert any("took over the lock" in line and str(dead.pid) in line for line in lines)
    challenger = versions.version_by_alias(spec.name, "challenger")
    assert challenger.tags["mlrt.trigger.evidence"] == "monitor-run-9"
    after = store.load()
    assert after.retrain is None and after.retrains_today == 1  # not counted twice
    assert not os.path.exists(store.lock_path)
