"""Drift against a training profile: exact merging of partials, verdicts a user can trust
(no alarms on unchanged data, exactly the changed features named), old profiles, settings."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from runtime.data.profile import profile_frame
from runtime.monitoring.drift import (
    drift_report,
    merge_window,
    prediction_profile,
    score_drift,
    window_partial,
)
from runtime.monitoring.settings import DriftSettings
from runtime.monitoring.window import OTHER_VALUES, distinct_estimate, partial_row

TYPES = {"x": "numeric", "skew": "numeric", "count": "numeric", "color": "categorical",
         "city": "categorical"}
COLORS = np.array(["red", "green", "blue", "black", "white"])
COLOR_P = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
CITY_P = 1 / np.arange(1, 41) ** 1.1 / (1 / np.arange(1, 41) ** 1.1).sum()


def make_rows(n: int, seed: int, shift: float = 0.0, color_p=COLOR_P,
              x_nulls: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "x": rng.normal(10.0, 2.0, n) + shift * 2.0,
        "skew": rng.lognormal(0.0, 1.0, n),
        "count": rng.poisson(3, n).astype(np.int64),
        "color": COLORS[rng.choice(5, n, p=color_p)],
        "city": np.array([f"city{i}" for i in range(40)])[rng.choice(40, n, p=CITY_P)],
    })
    if x_nulls:
        frame["x"] = frame["x"].mask(rng.random(n) < x_nulls)
    return frame


@pytest.fixture(scope="module")
def reference() -> dict:
    return profile_frame(make_rows(50_000, seed=0), TYPES)


def summarize(frame: pd.DataFrame, reference: dict, block: int = 1000) -> dict:
    return merge_window([window_partial(frame.iloc[i:i + block], reference)
                         for i in range(0, len(frame), block)])


def drifted(frame: pd.DataFrame, reference: dict, drift: DriftSettings | None = None) -> list:
    return score_drift(summarize(frame, reference), reference, drift)["drifted_features"]


# --- partials -----------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 2999), max_size=8, unique=True))
def test_partials_merge_exactly_whatever_the_block_cut(reference, cuts):
    frame = make_rows(3000, seed=1, x_nulls=0.05)
    frame.loc[::7, "city"] = "atlantis"  # values outside the reference: the "other" bucket
    bounds = [0, *sorted(cuts), len(frame)]
    blocks = [window_partial(frame.iloc[a:b], reference) for a, b in pairwise(bounds)]
    blocks.append(window_partial(frame.iloc[:0], reference))  # an empty block changes nothing
    merged, whole = merge_window(blocks), window_partial(frame, reference)
    for name, part in whole["numeric"].items():
        got = merged["numeric"][name]
        assert {k: got[k] for k in ("n", "nulls", "counts", "below", "above")} == {
            k: part[k] for k in ("n", "nulls", "counts", "below", "above")}
        assert got["mean"] == pytest.approx(part["mean"], rel=1e-12)
        assert got["m2"] == pytest.approx(part["m2"], rel=1e-9)
    assert merged["categorical"] == whole["categorical"]
    assert merged["rows"] == 3000


def test_merging_is_associative_so_summaries_merge_like_partials(reference):
    parts = [window_partial(make_rows(500, seed=s), reference) for s in range(4)]
    tree = merge_window([merge_window(parts[:2]), merge_window(parts[2:])])
    assert tree["categorical"] == merge_window(parts)["categorical"]


def test_partial_is_small_json_and_does_not_grow_with_rows(reference):
    small = window_partial(make_rows(1000, seed=2), reference)
    large = window_partial(make_rows(100_000, seed=2), reference)
    assert json.loads(json.dumps(large)) == large
    assert len(json.dumps(large)) < 4000
    assert len(json.dumps(large)) < 1.2 * len(json.dumps(small))


def test_dict_pandas_and_arrow_blocks_give_the_same_partial(reference):
    frame = make_rows(2000, seed=3, x_nulls=0.1)
    as_dict = {c: frame[c].to_numpy() for c in frame}
    expected = window_partial(frame, reference)
    assert window_partial(as_dict, reference) == expected
    assert window_partial(pa.Table.from_pandas(frame), reference) == expected


def test_partial_rows_carry_features_and_predictions_in_one_pass(reference):
    """What map_batches returns per block: JSON strings that merge into the same summary."""
    frame = make_rows(3000, seed=20)
    frame["prediction"] = np.random.default_rng(20).choice(3, 3000)
    predictions = prediction_profile(np.random.default_rng(21).choice(3, 1000), "classification")
    rows = [partial_row(pa.Table.from_pandas(frame.iloc[i:i + 1000]), reference, predictions)
            for i in range(0, 3000, 1000)]
    features = merge_window([json.loads(r["partial"][0]) for r in rows])
    assert features["categorical"] == summarize(frame, reference)["categorical"]
    scored = score_drift(merge_window([json.loads(r["prediction_partial"][0]) for r in rows]),
                         predictions)
    assert scored["rows"] == 3000 and not scored["detected"]


def test_integral_floats_and_ints_are_one_category():
    profile = profile_frame(pd.DataFrame({"k": [1, 2, 2, 3] * 100}), {"k": "categorical"})
    part = window_partial({"k": np.array([1.0, 2.0, np.nan, 3.0])}, profile)
    assert part["categorical"]["k"]["counts"] == {"1": 1, "2": 1, "3": 1}
    assert part["categorical"]["k"]["nulls"] == 1


def test_unseen_values_are_counted_and_sketched(reference):
    frame = make_rows(2000, seed=4)
    frame.loc[:199, "color"] = [f"new{i}" for i in range(200)]
    report = score_drift(summarize(frame, reference), reference)
    color = report["features"]["color"]
    assert color["unseen_share"] == pytest.approx(0.1)
    assert color["unseen_distinct"] == pytest.approx(200, rel=0.35)  # KMV estimate
    assert color["unseen_examples"][0].startswith("new")
    assert color["drifted"] is True
    sketch = {f"{i:016x}": str(i) for i in range(OTHER_VALUES - 1)}
    assert distinct_estimate(sketch) == OTHER_VALUES - 1  # exact below the sketch size


# --- verdicts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [500, 5000, 200_000])
def test_windows_from_the_training_distribution_are_not_flagged(reference, rows):
    for seed in range(10 if rows < 100_000 else 2):
        assert drifted(make_rows(rows, seed=100 + seed), reference) == []


def test_half_sd_mean_shift_flags_exactly_that_feature(reference):
    for seed in range(5):
        assert drifted(make_rows(5000, seed=200 + seed, shift=0.5), reference) == ["x"]


def test_tiny_shift_on_a_huge_window_is_not_drift(reference):
    """Significant (p ~ 0) but below the effect size: p-value tests cry wolf here."""
    report = score_drift(summarize(make_rows(400_000, seed=5, shift=0.05), reference,
                                   block=100_000), reference)
    x = report["features"]["x"]
    assert x["p_value"] < 1e-6 and x["score"] < x["threshold"] and x["drifted"] is False


def test_changed_category_mix_is_flagged(reference):
    mix = np.array([0.25, 0.25, 0.2, 0.15, 0.15])
    report = score_drift(summarize(make_rows(5000, seed=6, color_p=mix), reference), reference)
    assert report["drifted_features"] == ["color"]
    assert report["features"]["color"]["max_frequency_change"] == pytest.approx(0.15, abs=0.03)


def test_ten_percent_added_nulls_are_flagged(reference):
    report = score_drift(summarize(make_rows(5000, seed=7, x_nulls=0.1), reference), reference)
    assert report["detected"] and report["drifted_features"] == ["x"]
    x = report["features"]["x"]
    assert x["reasons"] == ["null_rate"] and x["null_rate"] == pytest.approx(0.1, abs=0.02)
    assert x["reference_null_rate"] == 0.0


def test_below_min_rows_says_not_enough_rows(reference):
    report = score_drift(summarize(make_rows(150, seed=8, shift=2.0), reference), reference)
    assert not report["detected"]
    assert {f["status"] for f in report["features"].values()} == {"not enough rows"}
    assert all(f["drifted"] is None for f in report["features"].values())
    lower = DriftSettings(min_rows=100)
    assert drifted(make_rows(150, seed=8, shift=2.0), reference, lower) == ["x"]


def test_empty_window_and_a_feature_never_captured(reference):
    empty = score_drift(merge_window([]), reference)
    assert empty["rows"] == 0 and not empty["detected"]
    frame = make_rows(1000, seed=9).drop(columns=["city"])
    report = score_drift(summarize(frame, reference), reference)
    assert report["features"]["city"]["status"] == "not captured"
    assert report["drifted_features"] == []


def test_an_old_profile_without_quantile_bins_still_works(reference):
    old = json.loads(json.dumps(reference))
    for entry in old["features"].values():
        entry.pop("quantile_bins", None)
    assert drifted(make_rows(5000, seed=10), old) == []
    assert drifted(make_rows(5000, seed=11, shift=0.5), old) == ["x"]


def test_quantile_bins_see_a_shift_of_a_skewed_feature_that_equal_width_bins_miss(reference):
    frame = make_rows(5000, seed=12)
    frame["skew"] = frame["skew"] * 0.7  # most of the mass sits in the first equal-width bin
    assert drifted(frame, reference) == ["skew"]
    old = json.loads(json.dumps(reference))
    del old["features"]["skew"]["quantile_bins"]
    assert drifted(frame, old) == []  # the histogram of old profiles: JS 0.075 against 0.14
    bins = reference["features"]["skew"]["quantile_bins"]
    assert len(bins["counts"]) == len(bins["edges"]) + 1 == 20
    assert sum(bins["counts"]) == reference["sample_rows"]


def test_every_method_detects_the_shift_and_stays_quiet_otherwise(reference):
    for method in ("psi", "jensen_shannon", "wasserstein"):
        drift = DriftSettings(method=method)
        assert drifted(make_rows(5000, seed=13), reference, drift) == [], method
        assert drifted(make_rows(5000, seed=14, shift=0.5), reference, drift) == ["x"], method


def test_per_feature_threshold_and_skip(reference):
    frame = make_rows(5000, seed=15, shift=0.5, x_nulls=0.1)
    assert drifted(frame, reference, DriftSettings(features={"x": {"skip": True}})) == []
    lenient = DriftSettings(features={"x": {"threshold": 0.5, "null_rate_threshold": 0.2}})
    report = score_drift(summarize(frame, reference), reference, lenient)
    assert report["features"]["x"]["threshold"] == 0.5 and report["drifted_features"] == []


def test_prediction_drift_on_class_frequencies():
    rng = np.random.default_rng(16)
    profile = prediction_profile(rng.choice(3, 2000, p=[0.5, 0.3, 0.2]), "classification")
    same = merge_window([window_partial({"prediction": rng.choice(3, 3000, p=[0.5, 0.3, 0.2])},
                                        profile)])
    moved = merge_window([window_partial({"prediction": rng.choice(3, 3000, p=[0.3, 0.3, 0.4])},
                                         profile)])
    reference = profile_frame(make_rows(1000, seed=17), TYPES)
    window = summarize(make_rows(1000, seed=18), reference)
    report = drift_report(window, reference, prediction_summary=moved,
                          prediction_reference=profile)
    assert report["prediction_drift"]["drifted_features"] == ["prediction"]
    assert not score_drift(same, profile)["detected"]
    assert set(report) == {"drift", "prediction_drift"}
    regression = prediction_profile(rng.normal(size=2000), "regression")
    assert regression["features"]["prediction"]["type"] == "numeric"


def test_report_has_the_documented_shape(reference):
    report = drift_report(summarize(make_rows(1000, seed=19), reference), reference)
    assert json.loads(json.dumps(report)) == report
    for entry in report["drift"]["features"].values():
        assert {"method", "score", "threshold", "drifted", "rows", "null_rate",
                "reference_null_rate", "status"} <= set(entry)
    assert report["prediction_drift"] is None


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "field"), [
    ({"min_rows": 0}, "min_rows"),
    ({"method": "ks"}, "method"),
    ({"threshold": -0.1}, "threshold"),
    ({"treshold": 0.1}, "treshold"),
    ({"features": {"x": {"threshold": 0}}}, "features.x.threshold"),
    ({"features": {"x": {"limit": 1}}}, "features.x.limit"),
    ({"method": "jensen_shannon", "threshold": 1.5}, "threshold"),
    ({"features": {"x": {"threshold": 2.0}}}, "features.x.threshold"),
])
def test_bad_settings_name_the_field(raw, field):
    with pytest.raises(ValidationError) as error:
        DriftSettings.model_validate(raw)
    assert field in str(error.value)


def test_defaults_are_documented_values():
    drift = DriftSettings()
    assert (drift.min_rows, drift.alpha, drift.null_rate_threshold) == (200, 0.001, 0.05)
    assert drift.for_feature("x") == ("jensen_shannon", 0.1, 0.05, False)
    assert DriftSettings(method="wasserstein").for_feature("c", categorical=True)[0] == (
        "jensen_shannon")
