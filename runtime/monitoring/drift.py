"""Drift of a window of served rows against a model version's training profile (no raw
training data): per-feature scores, verdicts that do not cry wolf, and the report.

One pass over the window: `window_partial` per block (`partial_row` is its map_batches form),
`merge_window` on the driver (all three in runtime.monitoring.window, re-exported here), then
`drift_report(summary, profile)`.

A feature drifts when its score passes an effect-size threshold (what is worth acting on:
`monitor.drift.threshold`) AND the difference is beyond sampling noise: a chi-square test of
homogeneity of the window's and the reference's bin counts (the reference is itself a sample)
at alpha / m, alpha split over all m tests (Bonferroni). So a window from the training
distribution is flagged with probability about <= alpha whatever the number of features, and
a huge window is not flagged for a difference too small to matter. The same two conditions
for the null rate. Below `min_rows` rows there is no verdict.

The default score is the Jensen-Shannon distance (base 2) on the reference's quantile bins, and
on category frequencies plus an "other" bucket: bounded (0..1), finite when a bin or category
is empty on one side (unseen values; PSI needs a made-up epsilon there), one scale for numeric
and categorical features, and, on quantile bins, as sensitive to skewed as to normal features.
The normed Wasserstein distance needs positions inside open end bins that a profile does not
have. PSI and Wasserstein remain selectable (`monitor.drift.method`).

Run the tests: .venv/bin/python -m pytest tests/unit/monitoring -q
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from runtime.data.profile import profile_frame
from runtime.monitoring.settings import DriftSettings
from runtime.monitoring.window import (
    distinct_estimate,
    merge_window,
    partial_row,
    reference_bins,
    reference_categories,
    window_partial,
)

__all__ = ["drift_report", "merge_window", "partial_row", "prediction_profile", "score_drift",
           "window_partial"]

PREDICTION = "prediction"
MIN_EXPECTED = 5
_NO_ROWS = {"n": 0, "nulls": 0, "absent": 0}
_EXAMPLES = 5


# --- scores on count vectors (reference first) ------------------------------------------------


def js_distance(reference: np.ndarray, window: np.ndarray) -> float:
    """Jensen-Shannon distance, base 2: 0 (same) .. 1 (disjoint)."""
    return float(jensenshannon(reference, window, base=2))


def psi(reference: np.ndarray, window: np.ndarray) -> float:
    """Population stability index. Half a count on every bin keeps a bin empty on one side
    finite; bins empty on both sides are dropped so they add nothing."""
    keep = (reference + window) > 0
    p = (reference[keep] + 0.5) / (reference[keep] + 0.5).sum()
    q = (window[keep] + 0.5) / (window[keep] + 0.5).sum()
    return float(np.sum((q - p) * np.log(q / p)))


def wasserstein_on_bins(reference: np.ndarray, window: np.ndarray, centers: np.ndarray,
                        scale: float) -> float:
    """Wasserstein-1 between the binned distributions (mass at bin centres), in units of
    `scale` (the reference standard deviation)."""
    return float(stats.wasserstein_distance(centers, centers, reference, window) / scale)


def homogeneity_p_value(reference: np.ndarray, window: np.ndarray) -> float:
    """p-value of "both count vectors come from one distribution": Pearson's chi-square on the
    2 x k table, so the reference's own sampling noise is in it (its bins are counted on <= 100k
    sampled rows). Bins where the window expects fewer than MIN_EXPECTED rows are pooled into
    one (Cochran's rule): without that, rare categories make the test cry wolf (simulated at
    alpha 1e-4 and 200-2000 rows: 1.0-2.4x the nominal rate with pooling; Jensen-Shannon's own
    chi-square limit, 2-5x)."""
    n = window.sum()
    expected = (reference + window) * n / (reference.sum() + n)
    small = expected < MIN_EXPECTED
    if small.any() and np.count_nonzero(~small) >= 2:
        reference = np.append(reference[~small], reference[small].sum())
        window = np.append(window[~small], window[small].sum())
    keep = (reference + window) > 0
    if np.count_nonzero(keep) < 2:
        return 1.0
    table = np.vstack([reference[keep], window[keep]])
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def null_rate_p_value(reference_nulls: int, reference_rows: int, nulls: int,
                      rows: int) -> float:
    """Fisher's exact test on the 2 x 2 table of nulls: exact when training had no nulls at
    all, where the chi-square approximation breaks down."""
    table = [[reference_nulls, reference_rows - reference_nulls], [nulls, rows - nulls]]
    return float(stats.fisher_exact(table).pvalue)


# --- verdicts ---------------------------------------------------------------------------------


def _distribution(method: str, reference: np.ndarray, window: np.ndarray, threshold: float,
                  alpha: float, centers: np.ndarray | None = None, scale: float = 1.0) -> dict:
    if method == "wasserstein":
        score = wasserstein_on_bins(reference, window, centers, scale)
    else:
        score = psi(reference, window) if method == "psi" else js_distance(reference, window)
    p_value = homogeneity_p_value(reference, window)
    return {"score": round(score, 6), "p_value": p_value,
            "distribution_drifted": bool(score > threshold and p_value < alpha)}


def _null_rate(window: dict, entry: dict, threshold: float, alpha: float) -> dict:
    rows, reference_rows = window["n"] + window["nulls"], entry["count"] + entry["nulls"]
    rate = window["nulls"] / rows
    reference_rate = entry["nulls"] / reference_rows if reference_rows else 0.0
    p_value = (null_rate_p_value(entry["nulls"], reference_rows, window["nulls"], rows)
               if reference_rows else 1.0)
    return {"null_rate": round(rate, 6), "reference_null_rate": round(reference_rate, 6),
            "null_threshold": threshold, "null_p_value": p_value,
            "null_drifted": bool(abs(rate - reference_rate) > threshold and p_value < alpha)}


def _bin_centers(edges: np.ndarray, entry: dict) -> np.ndarray:
    # the end bins are open; their mass is put between the training min/max and the cut
    low = min(entry.get("min", edges[0]), edges[0]) if len(edges) else 0.0
    high = max(entry.get("max", edges[-1]), edges[-1]) if len(edges) else 0.0
    bounds = np.concatenate([[low], edges, [high]])
    return (bounds[:-1] + bounds[1:]) / 2


def _numeric(window: dict, entry: dict, method: str, threshold: float, alpha: float) -> dict:
    bins = reference_bins(entry)
    if bins is None:
        return {}  # training had no values: nothing to compare the shape with
    edges, reference = bins
    scale = max(entry.get("std") or 0.0, 1e-12)
    counts = np.asarray(window["counts"], np.float64)
    return {**_distribution(method, reference, counts, threshold, alpha,
                            _bin_centers(edges, entry), scale),
            "mean": round(window["mean"], 6), "reference_mean": entry.get("mean"),
            "std": round(math.sqrt(window["m2"] / window["n"]), 6),
            "reference_std": entry.get("std"),
            "out_of_range_share": round((window["below"] + window["above"]) / window["n"], 6)}


def _categorical(window: dict, entry: dict, method: str, threshold: float,
                 alpha: float) -> dict:
    if not entry.get("count"):
        return {}
    known = reference_categories(entry)
    listed = sum(known.values())
    reference = np.array([*known.values(), max(entry["count"] - listed, 0)], np.float64)
    counts = np.array([*(window["counts"].get(k, 0) for k in known), window["other"]],
                      np.float64)
    complete = entry.get("distinct", 0) <= len(known)  # every training category is listed
    shares = counts / counts.sum() - reference / reference.sum()
    unseen = window["other"] / window["n"]
    return {**_distribution(method, reference, counts, threshold, alpha),
            "max_frequency_change": round(float(np.abs(shares).max()), 6),
            "other_share": round(unseen, 6),
            # without the full list of training categories, "other" may hold seen ones
            "unseen_share": round(unseen, 6) if complete else None,
            "unseen_distinct": distinct_estimate(window["other_values"]) if complete else None,
            "unseen_examples": list(window["other_values"].values())[:_EXAMPLES]
            if complete else []}


def _score_feature(name: str, window: dict, entry: dict, settings: DriftSettings,
                   alpha: float) -> dict:
    numeric = entry["type"] == "numeric"
    method, threshold, null_threshold, _ = settings.for_feature(name, categorical=not numeric)
    rows = window["n"] + window["nulls"]
    result = {"type": entry["type"], "method": method, "score": None, "threshold": threshold,
              "drifted": None, "rows": rows}
    if rows < settings.min_rows:
        status = "not captured" if rows == 0 and window["absent"] else "not enough rows"
        return {**result, "status": status}
    result.update(_null_rate(window, entry, null_threshold, alpha))
    if window["n"] >= settings.min_rows:
        score = _numeric if numeric else _categorical
        result.update(score(window, entry, method, threshold, alpha))
    reasons = [reason for reason, key in (("distribution", "distribution_drifted"),
                                          ("null_rate", "null_drifted")) if result.get(key)]
    if reasons:
        return {**result, "drifted": True, "status": "drift", "reasons": reasons}
    if "distribution_drifted" not in result:  # nulls fine, too few values for the shape
        return {**result, "status": "not enough rows", "reasons": []}
    return {**result, "drifted": False, "status": "ok", "reasons": []}


# --- the report -------------------------------------------------------------------------------


def score_drift(summary: dict, reference: dict, settings: DriftSettings | None = None) -> dict:
    """`{"detected", "drifted_features", "scored", "rows", "features": {name: {"method",
    "score", "threshold", "drifted", "status", "rows", "null_rate", ...}}}` of a merged window
    summary against a profile (a feature's `drifted` is None without a verdict)."""
    settings = settings or DriftSettings()
    names = [n for n in reference["features"] if not settings.for_feature(n)[3]]
    alpha = settings.alpha / (2 * max(len(names), 1))  # two tests per feature: shape, nulls
    features = {}
    for name in names:
        entry = reference["features"][name]
        kind = "numeric" if entry["type"] == "numeric" else "categorical"
        window = summary[kind].get(name, _NO_ROWS)  # an empty window has no partials at all
        features[name] = _score_feature(name, window, entry, settings, alpha)
    drifted = [n for n, f in features.items() if f["drifted"]]
    detected = bool(drifted) and len(drifted) >= settings.drift_share * len(names)
    return {"detected": detected, "drifted_features": drifted, "scored": len(names),
            "rows": summary["rows"], "features": features}


def drift_report(summary: dict, reference: dict, settings: DriftSettings | None = None, *,
                 prediction_summary: dict | None = None,
                 prediction_reference: dict | None = None) -> dict:
    """`{"drift": ..., "prediction_drift": ... | None}`: features and predictions, each scored
    as its own family of tests (prediction drift is None without a prediction profile)."""
    report = {"drift": score_drift(summary, reference, settings), "prediction_drift": None}
    if prediction_summary is not None and prediction_reference is not None:
        report["prediction_drift"] = score_drift(prediction_summary, prediction_reference,
                                                 settings)
    return report


def prediction_profile(predictions: np.ndarray, task: str) -> dict:
    """The prediction reference stored at registration (test-split predictions): class
    frequencies for a classifier, bins for a regressor; column `prediction` of a window."""
    kind = "categorical" if task == "classification" else "numeric"
    return profile_frame(pd.DataFrame({PREDICTION: np.asarray(predictions)}), {PREDICTION: kind})
