"""Unit: the monitor's window (time bounds, files of the days it spans, the block pass
without Ray), the label join, coverage, quality metrics and latency percentiles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from capture_factory import write_captures, write_labels
from sklearn import metrics as skm

from runtime.data.profile import profile_frame
from runtime.errors import InputError
from runtime.monitoring.blocks import merge_blocks, summarize_block
from runtime.monitoring.quality import (
    latency_partial,
    latency_quantile,
    merge_latency,
    merge_quality,
    quality_metrics,
    quality_partial,
)
from runtime.monitoring.report import version_report
from runtime.monitoring.settings import DriftSettings
from runtime.monitoring.source import capture_files, parse_time, parse_window, read_labels
from runtime.pipeline.decide import prediction_profile as registered_prediction_profile

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CLASSIFICATION = ["accuracy", "f1_macro", "precision", "recall", "log_loss"]


# --- the window's bounds ------------------------------------------------------------------------


def test_durations_and_iso_times():
    assert parse_time("10m", "--since", NOW) == NOW - timedelta(minutes=10)
    assert parse_time("1.5h", "--since", NOW) == NOW - timedelta(minutes=90)
    assert parse_time("2026-11-30T08:00:00Z", "--since", NOW) == datetime(
        2026, 11, 30, 8, tzinfo=UTC)
    assert parse_time("2026-11-30T08:00:00", "--since", NOW).tzinfo is not None  # UTC


@pytest.mark.parametrize("since, until, message", [
    ("ten minutes", None, "--since: expected a duration"),
    ("10x", None, "--since"),
    ("1h", "yesterday", "--until: expected"),
    ("1h", "2h", "is not before --until"),
])
def test_bad_window_names_the_option(since, until, message):
    with pytest.raises(InputError, match=message):
        parse_window(since, until, NOW)


def test_only_the_days_the_window_spans_are_listed(tmp_path):
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    for day in (NOW - timedelta(days=3), NOW - timedelta(hours=13), NOW - timedelta(minutes=5)):
        write_captures(tmp_path, "m", "1", frame, ["a", "b"], start=day)
    (tmp_path / "captures/m" / f"date={NOW:%Y-%m-%d}" / ".partial.parquet").write_bytes(b"x")
    _, files = capture_files(str(tmp_path), "m", NOW - timedelta(hours=14), NOW)
    assert len(files) == 2 and all(".partial" not in f for f in files)
    assert capture_files(str(tmp_path), "other", NOW - timedelta(days=9), NOW)[1] == []


# --- labels -----------------------------------------------------------------------------------


def test_labels_last_one_wins_and_the_file_wins_over_stored(tmp_path):
    write_labels(tmp_path, "m", ["r1", "r2"], ["a", "b"], NOW - timedelta(minutes=30))
    write_labels(tmp_path, "m", ["r2"], ["c"], NOW - timedelta(minutes=10))
    late = tmp_path / "late.csv"
    late.write_text("request_id,label\nr1,z\n007,q\n")
    stored = read_labels(str(tmp_path), "m", NOW - timedelta(hours=1), now=NOW)
    assert stored == {"r1": "a", "r2": "c"}
    both = read_labels(str(tmp_path), "m", NOW - timedelta(hours=1), str(late), now=NOW)
    assert both == {"r1": "z", "r2": "c", "007": "q"}  # ids stay text: 007 is not 7


def test_label_file_problems_exit_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\nr1,a\n")
    with pytest.raises(InputError, match="no column request_id"):
        read_labels(str(tmp_path), "m", NOW, str(bad), now=NOW)
    with pytest.raises(InputError, match="does not exist"):
        read_labels(str(tmp_path), "m", NOW, str(tmp_path / "missing.csv"), now=NOW)
    with pytest.raises(InputError, match=".csv or .parquet"):
        read_labels(str(tmp_path), "m", NOW, str(_touch(tmp_path / "labels.json")), now=NOW)


def _touch(path):
    path.write_text("{}")
    return path


# --- quality metrics ----------------------------------------------------------------------------


def test_classification_metrics_merge_to_sklearns():
    rng = np.random.default_rng(0)
    classes = ["maybe", "no", "yes"]  # sorted, as a model version stores them
    y = rng.choice(classes, 900)
    pred = np.where(rng.random(900) < 0.7, y, rng.choice(classes, 900))
    proba = rng.dirichlet(np.ones(3), 900)
    labels = [str(v) if i % 3 else None for i, v in enumerate(y)]  # two thirds labeled
    parts = [quality_partial("classification", labels[i:i + 250], list(pred[i:i + 250]),
                             proba[i:i + 250].tolist(), classes) for i in range(0, 900, 250)]
    got = quality_metrics(merge_quality(parts, "classification"), "classification",
                          CLASSIFICATION)
    keep = np.array([v is not None for v in labels])
    yt, yp = y[keep], pred[keep]
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(yt, yp), abs=1e-6)
    assert got["f1_macro"] == pytest.approx(skm.f1_score(yt, yp, average="macro"), abs=1e-6)
    assert got["precision"] == pytest.approx(skm.precision_score(yt, yp, average="macro"),
                                             abs=1e-6)
    assert got["recall"] == pytest.approx(skm.recall_score(yt, yp, average="macro"), abs=1e-6)
    assert got["log_loss"] == pytest.approx(skm.log_loss(yt, proba[keep], labels=classes),
                                            abs=1e-5)


def test_regression_metrics_merge_to_sklearns():
    rng = np.random.default_rng(1)
    y, pred = rng.normal(size=500), rng.normal(size=500)
    texts = [repr(float(p)) for p in pred]  # as captured: the float's repr
    parts = [quality_partial("regression", list(y[i:i + 100]), texts[i:i + 100], None, None)
             for i in range(0, 500, 100)]
    got = quality_metrics(merge_quality(parts, "regression"), "regression", ["rmse", "mae", "r2"])
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)), abs=1e-6)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), abs=1e-6)
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred), abs=1e-6)


def test_latency_percentiles_from_merged_bins():
    rng = np.random.default_rng(2)
    values = rng.lognormal(1.0, 0.8, 20_000)
    merged = merge_latency([latency_partial(values[i:i + 3000]) for i in range(0, 20_000, 3000)])
    for q in (0.5, 0.99):
        assert latency_quantile(merged, q) == pytest.approx(np.quantile(values, q), rel=0.07)


# --- the block pass, without Ray ----------------------------------------------------------------


def _context(profile, start, end, labels, versions=("1",)):
    return {"start_us": int(start.timestamp() * 1e6), "end_us": int(end.timestamp() * 1e6),
            "buckets": 4, "task": "classification", "labels": labels,
            "versions": {v: {"profile": profile, "classes": ["a", "b"],
                             "prediction_profile": registered_prediction_profile(
                                 np.array(["a", "b"] * 50), "classification")}
                         for v in versions}}


def test_blocks_filter_the_window_join_labels_and_split_arms(tmp_path):
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"x": rng.normal(size=1000), "c": rng.choice(["u", "v"], 1000)})
    profile = profile_frame(reference, {"x": "numeric", "c": "categorical"})
    start = NOW - timedelta(minutes=10)
    frame = reference.iloc[:400].reset_index(drop=True)
    pred = np.where(frame["x"] > 0, "a", "b")
    stable = write_captures(tmp_path, "m", "1", frame.iloc[:300], pred[:300],
                            start=start + timedelta(minutes=1), spacing=timedelta(seconds=1))
    canary = write_captures(tmp_path, "m", "1", frame.iloc[300:], pred[300:], arm="canary",
                            start=start + timedelta(minutes=2), spacing=timedelta(seconds=1))
    write_captures(tmp_path, "m", "1", frame.iloc[:50], pred[:50], start=start - timedelta(hours=1))
    write_captures(tmp_path, "m", "9", frame.iloc[:20], pred[:20], start=start)
    labels = {i: "a" for i in stable[:150]} | {i: "b" for i in canary[:50]}
    context = _context(profile, start, NOW, labels)
    _, files = capture_files(str(tmp_path), "m", start, NOW)
    parts = [summarize_block(pq.read_table(f), context) for f in files]
    merged = merge_blocks(parts, "classification")
    assert merged["rows"] == 420 and merged["unknown_rows"] == 20  # the hour-old rows are out
    version = version_report("1", merged["versions"]["1"], context["versions"]["1"],
                             "classification", CLASSIFICATION, DriftSettings(min_rows=50), start,
                             NOW, 4)
    quality = version["quality"]
    assert quality["labeled"] == 200 and quality["coverage"] == pytest.approx(0.5)
    assert quality["arms"]["stable"]["labeled"] == 150
    assert quality["arms"]["canary"]["coverage"] == pytest.approx(0.5)
    expected = np.mean(pred[:150] == "a")
    assert quality["arms"]["stable"]["metrics"]["accuracy"] == pytest.approx(expected)
    assert not version["drift"]["detected"]  # rows from the reference itself
    assert version["latency"]["p50_ms"] == pytest.approx(2.0, rel=0.07)
    assert sum(p["rows"] for p in version["timeline"]) == 400


def test_the_registered_prediction_profile_is_drifts():
    from runtime.monitoring.drift import prediction_profile

    predictions = np.array([0, 1, 1, 2, 2, 2])
    assert registered_prediction_profile(predictions, "classification") == \
        prediction_profile(predictions, "classification")
