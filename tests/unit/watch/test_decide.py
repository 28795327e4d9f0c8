"""The watcher's decisions as pure functions of report dicts, state and the clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from factories import make_spec

from runtime.watch.decide import (
    DONE,
    NONE,
    PROMOTE,
    RETRAIN,
    ROLLBACK,
    WAIT,
    decide_retrain,
    decide_rollout,
    observe,
    started_retrain,
)
from runtime.watch.state import WatchState

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def report(drift: bool | None = False, rows: int = 1000, quality: dict | None = None,
           versions: list | None = None) -> dict:
    """The documented monitor report, only the parts the watcher reads."""
    features = {} if drift is None else {
        "x1": {"method": "jensen_shannon", "score": 0.3 if drift else 0.01, "threshold": 0.1,
               "drifted": bool(drift)}}
    return {"model": "m", "version": "1", "rows": rows, "status": "ok",
            "window": {"since": "", "until": ""},
            "drift": {"detected": bool(drift), "features": features},
            "prediction_drift": None,
            "quality": quality or {"labeled": 0, "coverage": 0.0, "metrics": {}},
            "versions": versions or [], "mlflow_run": "run-123"}


def monitor(tmp_path, **sections):
    return make_spec(tmp_path, monitor=sections).monitor


def test_drift_in_consecutive_windows_triggers(tmp_path):
    m = monitor(tmp_path, triggers={"drift": {"min_windows": 3}})
    state = WatchState()
    for expected in (1, 2):
        state = observe(state, report(drift=True), m, NOW)
        assert state.drift_windows == expected
        assert decide_retrain(state, report(drift=True), m, NOW).action == NONE
    state = observe(state, report(drift=True), m, NOW)
    decision = decide_retrain(state, report(drift=True), m, NOW)
    assert (decision.action, decision.trigger) == (RETRAIN, "drift")
    assert "3 consecutive windows" in decision.reason


def test_a_clean_window_resets_and_an_empty_one_does_not(tmp_path):
    m = monitor(tmp_path)
    state = observe(WatchState(drift_windows=2), report(drift=True), m, NOW)
    assert observe(state, report(drift=None, rows=0), m, NOW).drift_windows == 3
    assert observe(state, None, m, NOW).drift_windows == 3  # no monitor: no verdict
    assert observe(state, report(drift=False), m, NOW).drift_windows == 0


def test_quality_below_needs_enough_labels(tmp_path):
    m = monitor(tmp_path, triggers={"quality": {"metric": "accuracy", "below": 0.9,
                                                "min_labels": 100}})
    few = report(quality={"labeled": 99, "metrics": {"accuracy": 0.5}})
    assert decide_retrain(WatchState(), few, m, NOW).action == NONE
    enough = report(quality={"labeled": 100, "metrics": {"accuracy": 0.85}})
    decision = decide_retrain(WatchState(), enough, m, NOW)
    assert (decision.action, decision.trigger) == (RETRAIN, "quality")
    assert "0.8500 < 0.9" in decision.reason
    good = report(quality={"labeled": 500, "metrics": {"accuracy": 0.95}})
    assert decide_retrain(WatchState(), good, m, NOW).action == NONE


def test_schedule_due_since_the_last_check(tmp_path):
    m = monitor(tmp_path, triggers={"schedule": "0 12 * * *"})
    before = WatchState(last_check=(NOW - timedelta(minutes=5)).isoformat())
    decision = decide_retrain(before, report(), m, NOW)
    assert (decision.action, decision.trigger) == (RETRAIN, "schedule")
    after = WatchState(last_check=NOW.isoformat())
    assert decide_retrain(after, report(), m, NOW + timedelta(minutes=5)).action == NONE
    assert decide_retrain(WatchState(), report(), m, NOW).action == NONE  # first cycle


def test_cooldown_and_max_per_day_hold_automatic_triggers_not_manual(tmp_path):
    m = monitor(tmp_path, retrain={"cooldown": "6h", "max_per_day": 2})
    drifting = WatchState(drift_windows=5, last_retrain=(NOW - timedelta(hours=1)).isoformat(),
                          retrain_day=NOW.date().isoformat(), retrains_today=1)
    held = decide_retrain(drifting, report(drift=True), m, NOW)
    assert (held.action, held.trigger, held.held) == (NONE, "drift", True)
    assert "cooldown (6h) runs until" in held.reason
    later = NOW + timedelta(hours=7)
    assert decide_retrain(drifting, report(drift=True), m, later).action == RETRAIN
    full = replace(drifting, retrains_today=2, last_retrain=(NOW - timedelta(hours=7))
                   .isoformat())
    assert "max_per_day 2" in decide_retrain(full, report(drift=True), m, NOW).reason
    tomorrow = observe(full, report(drift=True), m, NOW + timedelta(days=1))
    assert tomorrow.retrains_today == 0
    manual = decide_retrain(drifting, report(), m, NOW, manual=True)
    assert (manual.action, manual.trigger) == (RETRAIN, "manual")


def test_no_retrain_while_a_rollout_is_pending(tmp_path):
    m = monitor(tmp_path)
    state = WatchState(drift_windows=9, pending={"version": "4", "phase": "canary"})
    assert decide_retrain(state, report(drift=True), m, NOW, manual=True).action == WAIT


def test_started_retrain_counts_once_and_resets_the_windows(tmp_path):
    m = monitor(tmp_path)
    state = observe(WatchState(drift_windows=3), report(drift=True), m, NOW)
    decision = decide_retrain(state, report(drift=True), m, NOW)
    started = started_retrain(state, decision, "run-123", NOW)
    assert (started.drift_windows, started.retrains_today) == (0, 1)
    assert started.retrain == {"trigger": "drift", "reason": decision.reason,
                               "evidence": "run-123", "started": NOW.isoformat()}
    assert started.last_retrain == NOW.isoformat()


def _canary(challenger: tuple[int, float] | None, champion: tuple[int, float] | None):
    entries = []
    for version, q in (("2", challenger), ("1", champion)):
        if q is not None:
            entries.append({"version": version, "quality": {"labeled": q[0],
                                                            "metrics": {"accuracy": q[1]}}})
    return report(versions=entries)


PENDING = {"version": "2", "phase": "canary", "champion": "1", "alias": "challenger"}


@pytest.mark.parametrize(("challenger", "champion", "drop", "action"), [
    ((199, 0.99), (900, 0.90), 0.0, WAIT),       # too few labeled canary requests
    ((200, 0.91), (900, 0.90), 0.0, PROMOTE),
    ((200, 0.90), (900, 0.90), 0.0, PROMOTE),    # a tie promotes
    ((200, 0.89), (900, 0.90), 0.0, ROLLBACK),
    ((200, 0.89), (900, 0.90), 0.02, PROMOTE),   # within max_quality_drop
    ((200, 0.80), None, 0.0, PROMOTE),           # nothing to compare with
    (None, (900, 0.90), 0.0, WAIT),              # no canary rows yet
])
def test_rollout(tmp_path, challenger, champion, drop, action):
    rollout = make_spec(tmp_path, monitor={"rollout": {"min_labeled": 200,
                                                       "max_quality_drop": drop}}
                        ).monitor.rollout
    decision = decide_rollout(PENDING, _canary(challenger, champion), rollout, "accuracy")
    assert decision.action == action, decision.reason
    if action in (PROMOTE, ROLLBACK):
        assert decision.numbers["challenger"] == challenger[0 + 1]


def test_rollout_on_an_error_metric_lower_is_better(tmp_path):
    rollout = make_spec(tmp_path, monitor={"rollout": {"min_labeled": 10}}).monitor.rollout
    rows = report(versions=[{"version": "2", "quality": {"labeled": 10, "metrics": {"rmse": 3}}},
                            {"version": "1", "quality": {"labeled": 10, "metrics": {"rmse": 2}}}])
    assert decide_rollout(PENDING, rows, rollout, "rmse").action == ROLLBACK


def test_manual_approval_waits_then_ends(tmp_path):
    rollout = make_spec(tmp_path).monitor.rollout
    pending = {"version": "3", "phase": "approval", "model": "m"}
    waiting = decide_rollout(pending, None, rollout, "accuracy", "pending")
    assert waiting.action == WAIT and "mlrt models approve m 3" in waiting.reason
    assert decide_rollout(pending, None, rollout, "accuracy", "approved").action == DONE
    assert decide_rollout(pending, None, rollout, "accuracy", "rejected").action == DONE
