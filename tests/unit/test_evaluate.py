"""Metrics and the promotion gate."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.evaluate import check_gate, compute_metrics
from runtime.spec import Gate


def test_classification_metrics():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.1, 0.9]])
    m = compute_metrics(["accuracy", "f1_macro", "precision", "recall", "log_loss"], y, pred,
                        proba, [0, 1])
    assert m["accuracy"] == 0.75
    assert m["recall"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["precision"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.8, 0.9])))


def test_regression_metrics():
    m = compute_metrics(["rmse", "mae", "r2"], np.array([1.0, 2.0, 3.0]),
                        np.array([1.0, 2.0, 5.0]))
    assert m["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["r2"] == pytest.approx(1 - 4 / 2)


def test_gate_min():
    gate = Gate(metric="accuracy", min=0.9)
    assert check_gate(gate, {"accuracy": 0.95}).passed
    verdict = check_gate(gate, {"accuracy": 0.85})
    assert not verdict.passed and verdict.reason == "accuracy 0.8500 < 0.9"


def test_gate_min_is_a_ceiling_for_errors():
    gate = Gate(metric="rmse", min=1.0)
    assert check_gate(gate, {"rmse": 0.5}).passed
    assert not check_gate(gate, {"rmse": 1.5}).passed


def test_gate_beat_champion():
    gate = Gate(metric="accuracy", min=0.5, beat_champion=True)
    assert check_gate(gate, {"accuracy": 0.9}, None).passed  # first model: nothing to beat
    lost = check_gate(gate, {"accuracy": 0.9}, {"accuracy": 0.95}, "3")
    assert not lost.passed and "champion v3 0.9500" in lost.reason
    assert check_gate(gate, {"accuracy": 0.95}, {"accuracy": 0.95}, "3").passed  # a tie passes
    lower = Gate(metric="mae", beat_champion=True)
    assert check_gate(lower, {"mae": 0.4}, {"mae": 0.5}, "1").passed
    assert not check_gate(lower, {"mae": 0.6}, {"mae": 0.5}, "1").passed


def test_no_gate_passes():
    assert check_gate(None, {}).passed
