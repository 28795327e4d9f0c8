"""Mergeable summaries of what served rows say besides their features: quality on the labeled
rows (joined by request_id), label coverage and latency, each as plain-JSON partials that add
up exactly whatever the block cut (runtime.monitoring.blocks computes them per block).

    classification: {"n", "confusion": {"true\\x1fpredicted": n}, "log_loss_sum", "log_loss_n"}
    regression:     {"n", "abs", "sq", "y", "y2"}           (sums of |e|, e^2, y, y^2)
    latency:        {"n", "sum", "bins": {index: n}}          (LATENCY_EDGES, log spaced)

The metrics are the task's (runtime.training.evaluate's names): accuracy, f1_macro, precision,
recall (macro over the labels seen, as scikit-learn), log_loss; rmse, mae, r2.
"""

from __future__ import annotations

import math

import numpy as np

from runtime.monitoring.window import category_key

# 20 bins a decade from 10 us to 100 s: a percentile read off them is within ~6% of the exact
# one, and a histogram merges by addition (a list of latencies would not fit the driver)
LATENCY_EDGES = np.logspace(-2, 5, 141)
_SEP = "\x1f"


def empty_quality(task: str) -> dict:
    if task == "classification":
        return {"n": 0, "confusion": {}, "log_loss_sum": 0.0, "log_loss_n": 0}
    return {"n": 0, "abs": 0.0, "sq": 0.0, "y": 0.0, "y2": 0.0}


def quality_partial(task: str, labels: list, predictions: list, probabilities: list | None,
                    classes: list | None) -> dict:
    """Partial of the labeled rows (`labels[i]` None: not labeled)."""
    part = empty_quality(task)
    if task == "classification":
        index = {category_key(c): i for i, c in enumerate(classes or [])}
        for i, (label, predicted) in enumerate(zip(labels, predictions, strict=True)):
            if label is None:
                continue
            truth = category_key(label)
            key = f"{truth}{_SEP}{category_key(predicted)}"
            part["confusion"][key] = part["confusion"].get(key, 0) + 1
            part["n"] += 1
            proba = probabilities[i] if probabilities is not None else None
            if proba is not None and truth in index and len(proba) == len(index):
                part["log_loss_sum"] -= math.log(min(max(proba[index[truth]], 1e-15), 1.0))
                part["log_loss_n"] += 1
        return part
    truth, predicted = _numeric_pairs(labels, predictions)
    errors = predicted - truth
    part.update(n=len(truth), abs=float(np.abs(errors).sum()), sq=float(errors @ errors),
                y=float(truth.sum()), y2=float(truth @ truth))
    return part


def _numeric_pairs(labels: list, predictions: list) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(_float(a), _float(b)) for a, b in zip(labels, predictions, strict=True)
             if a is not None]
    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if not pairs:
        return np.empty(0), np.empty(0)
    return np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan  # a label that is no number cannot score a regressor: left out


def merge_quality(parts: list[dict], task: str) -> dict:
    merged = empty_quality(task)
    for part in parts:
        for key, value in part.items():
            if key == "confusion":
                for cell, n in value.items():
                    merged["confusion"][cell] = merged["confusion"].get(cell, 0) + n
            else:
                merged[key] += value
    return merged


def quality_metrics(summary: dict, task: str, names: list[str] | tuple[str, ...]) -> dict:
    """The task's metrics of a merged quality summary ({} without labeled rows)."""
    if not summary["n"]:
        return {}
    if task == "classification":
        values = _classification(summary)
    else:
        n = summary["n"]
        mean = summary["y"] / n
        total = summary["y2"] - n * mean * mean
        values = {"rmse": math.sqrt(summary["sq"] / n), "mae": summary["abs"] / n,
                  "r2": 1 - summary["sq"] / total if total > 1e-12 else None}
    return {k: round(v, 6) for k, v in values.items() if k in names and v is not None}


def _classification(summary: dict) -> dict:
    cells = {tuple(k.split(_SEP, 1)): n for k, n in summary["confusion"].items()}
    labels = sorted({t for t, _ in cells} | {p for _, p in cells})
    correct = {c: cells.get((c, c), 0) for c in labels}
    true_n = {c: sum(n for (t, _), n in cells.items() if t == c) for c in labels}
    pred_n = {c: sum(n for (_, p), n in cells.items() if p == c) for c in labels}
    precision = [correct[c] / pred_n[c] if pred_n[c] else 0.0 for c in labels]
    recall = [correct[c] / true_n[c] if true_n[c] else 0.0 for c in labels]
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall, strict=True)]
    out = {"accuracy": sum(correct.values()) / summary["n"],
           "f1_macro": float(np.mean(f1)), "precision": float(np.mean(precision)),
           "recall": float(np.mean(recall))}
    if summary["log_loss_n"]:
        out["log_loss"] = summary["log_loss_sum"] / summary["log_loss_n"]
    return out


def correct_share(summary: dict, task: str) -> float | None:
    """One number per time bucket for the report's quality plot: accuracy or mae."""
    if not summary["n"]:
        return None
    if task == "classification":
        hits = sum(n for k, n in summary["confusion"].items() if len(set(k.split(_SEP))) == 1)
        return hits / summary["n"]
    return summary["abs"] / summary["n"]


# --- latency ----------------------------------------------------------------------------------


def latency_partial(values: np.ndarray) -> dict:
    values = values[np.isfinite(values)]
    index = np.searchsorted(LATENCY_EDGES, values, side="right")
    bins, counts = np.unique(index, return_counts=True)
    return {"n": int(len(values)), "sum": float(values.sum()),
            "bins": {str(int(b)): int(c) for b, c in zip(bins, counts, strict=True)}}


def merge_latency(parts: list[dict]) -> dict:
    merged: dict = {"n": 0, "sum": 0.0, "bins": {}}
    for part in parts:
        merged["n"] += part["n"]
        merged["sum"] += part["sum"]
        for b, c in part["bins"].items():
            merged["bins"][b] = merged["bins"].get(b, 0) + c
    return merged


def latency_quantile(summary: dict, q: float) -> float | None:
    """The q-quantile read off the log bins (geometric middle of the bin it falls in)."""
    if not summary["n"]:
        return None
    target, seen = q * summary["n"], 0
    for b in sorted(summary["bins"], key=int):
        seen += summary["bins"][b]
        if seen >= target:
            i = int(b)
            low = LATENCY_EDGES[max(i - 1, 0)]
            high = LATENCY_EDGES[min(i, len(LATENCY_EDGES) - 1)]
            return round(float(math.sqrt(low * high)), 3)
    return None


def latency_summary(summary: dict) -> dict:
    return {"rows": summary["n"],
            "mean_ms": round(summary["sum"] / summary["n"], 3) if summary["n"] else None,
            "p50_ms": latency_quantile(summary, 0.5), "p99_ms": latency_quantile(summary, 0.99)}
