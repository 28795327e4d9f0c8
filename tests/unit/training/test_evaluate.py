"""Metrics and the promotion gate."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.spec import Gate
from runtime.training.evaluate import check_gate, compute_metrics


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


def _slice_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 600
    group = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.45, 0.05])
    y = rng.integers(0, 2, size=n)
    wrong = rng.random(n) < np.where(group == "b", 0.3, 0.05)  # b: far more mistakes
    pred = np.where(wrong, 1 - y, y)
    return group, y, pred


def test_slice_metrics_equal_a_pandas_groupby_of_the_same_predictions():
    import pandas as pd
    from sklearn.metrics import f1_score

    from runtime.training.evaluate import slice_metrics

    group, y, pred = _slice_case()
    site = np.where(np.arange(len(y)) % 7 == 0, None, "x").astype(object)  # nulls: a slice
    slices = slice_metrics(["accuracy", "f1_macro"], {"group": group, "site": site}, y, pred,
                           min_rows=40)
    frame = pd.DataFrame({"group": group, "site": site, "ok": y == pred, "y": y, "p": pred})
    expected = frame.groupby("group")["ok"].agg(["mean", "size"])
    by_group = {s.value: s for s in slices if s.column == "group"}
    assert list(by_group) == ["a", "b", "c"]
    for value, row in expected.iterrows():
        assert by_group[value].metrics["accuracy"] == pytest.approx(row["mean"], abs=1e-12)
        assert by_group[value].rows == row["size"]
        part = frame[frame.group == value]
        assert by_group[value].metrics["f1_macro"] == pytest.approx(
            f1_score(part.y, part.p, average="macro"))
    assert by_group["c"].gated is False and by_group["a"].gated is True  # c: < 40 rows
    by_site = {s.value: s.rows for s in slices if s.column == "site"}
    assert by_site == {"null": int((site == None).sum()), "x": int((site == "x").sum())}  # noqa: E711


def test_a_slice_gap_fails_the_gate_naming_the_slice():
    from runtime.training.evaluate import slice_metrics

    group, y, pred = _slice_case()
    overall = compute_metrics(["accuracy"], y, pred)
    slices = slice_metrics(["accuracy"], {"group": group}, y, pred, min_rows=40)
    verdict = check_gate(Gate(metric="accuracy", max_slice_gap=0.05), overall, slices=slices)
    assert not verdict.passed
    assert "worst slice group=b: accuracy" in verdict.reason and "> max_slice_gap 0.05" in \
        verdict.reason and "(1 slice(s) under min_slice_rows not gated)" in verdict.reason
    loose = check_gate(Gate(metric="accuracy", max_slice_gap=0.5), overall, slices=slices)
    assert loose.passed and "worst slice group=b" in loose.reason


def test_slices_under_min_rows_are_reported_not_gated():
    from runtime.training.evaluate import slice_metrics

    group, y, pred = _slice_case()
    overall = compute_metrics(["accuracy"], y, pred)
    slices = slice_metrics(["accuracy"], {"group": group}, y, pred, min_rows=10_000)
    assert len(slices) == 3 and not any(s.gated for s in slices)
    verdict = check_gate(Gate(metric="accuracy", max_slice_gap=0.0), overall, slices=slices)
    assert verdict.passed and "no slice with enough rows" in verdict.reason


def test_lower_is_better_slice_gaps_count_upwards():
    from runtime.training.evaluate import slice_metrics

    y = np.array([1.0, 2.0, 3.0, 4.0] * 10)
    pred = y + np.where(np.arange(40) < 20, 0.1, 2.0)
    part = np.where(np.arange(40) < 20, "good", "bad").astype(object)
    overall = compute_metrics(["mae"], y, pred)
    slices = slice_metrics(["mae"], {"part": part}, y, pred, min_rows=5)
    verdict = check_gate(Gate(metric="mae", max_slice_gap=0.5), overall, slices=slices)
    assert not verdict.passed and "worst slice part=bad: mae 2.0000 is 0.9500 above" in \
        verdict.reason


def test_a_continuous_slice_column_is_refused():
    from runtime.errors import InputError
    from runtime.training.evaluate import slice_metrics

    y = np.arange(500) % 2
    with pytest.raises(InputError, match="evaluate.slices: column 'x' has 500 distinct"):
        slice_metrics(["accuracy"], {"x": np.arange(500.0)}, y, y)
