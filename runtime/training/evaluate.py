"""Evaluate stage: metrics on the test split, per slice, and the promotion gate. Pure
functions, no Ray."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from runtime.errors import InputError
from runtime.spec import Gate

LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})
MAX_SLICE_VALUES = 100  # per column: more is a continuous column, not a group
NULL_SLICE = "null"


def compute_metrics(names: tuple[str, ...] | list[str], y_true: np.ndarray, y_pred: np.ndarray,
                    proba: np.ndarray | None = None,
                    classes: list | None = None) -> dict[str, float]:
    from sklearn import metrics as m

    out: dict[str, float] = {}
    for name in names:
        if name == "accuracy":
            value = m.accuracy_score(y_true, y_pred)
        elif name == "f1_macro":
            value = m.f1_score(y_true, y_pred, average="macro", zero_division=0)
        elif name == "precision":
            value = m.precision_score(y_true, y_pred, average="macro", zero_division=0)
        elif name == "recall":
            value = m.recall_score(y_true, y_pred, average="macro", zero_division=0)
        elif name == "log_loss":
            if proba is None:
                continue
            value = m.log_loss(y_true, np.clip(proba, 1e-15, 1), labels=classes)
        elif name == "rmse":
            value = float(np.sqrt(m.mean_squared_error(y_true, y_pred)))
        elif name == "mae":
            value = m.mean_absolute_error(y_true, y_pred)
        elif name == "r2":
            value = m.r2_score(y_true, y_pred)
        else:
            raise ValueError(f"unknown metric {name!r}")
        out[name] = float(value)
    return out


@dataclass(frozen=True)
class Slice:
    """The metrics of the test rows where `column` equals `value`."""

    column: str
    value: str  # the value as text ("null" for missing)
    rows: int
    metrics: dict[str, float]  # a metric undefined on the slice (r2 of one row) is left out
    gated: bool  # rows >= evaluate.min_slice_rows

    @property
    def label(self) -> str:
        return f"{self.column}={self.value}"

    def to_json(self) -> dict:
        return {"column": self.column, "value": self.value, "rows": self.rows,
                "gated": self.gated, "metrics": self.metrics}


def slice_metrics(names: tuple[str, ...] | list[str], columns: dict[str, np.ndarray],
                  y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None = None,
                  classes: list | None = None, min_rows: int = 1) -> list[Slice]:
    """Every metric per value of each slice column (aligned with y_true), in column order and
    then by value. Raises InputError for a column with more than MAX_SLICE_VALUES values."""
    out = []
    for column, values in columns.items():
        groups = pd.Series(values).groupby(pd.Series(values), dropna=False, sort=True).indices
        if len(groups) > MAX_SLICE_VALUES:
            raise InputError(f"evaluate.slices: column '{column}' has {len(groups)} distinct "
                             f"values in the test split (at most {MAX_SLICE_VALUES}); slice by "
                             "a categorical column, or bin this one into a new column")
        for value, index in groups.items():
            metrics = compute_metrics(names, y_true[index], y_pred[index],
                                      None if proba is None else proba[index], classes)
            out.append(Slice(column, _text(value), len(index),
                             {k: v for k, v in metrics.items() if math.isfinite(v)},
                             len(index) >= min_rows))
    return out


def _text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NULL_SLICE
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)


def worst_slice(slices: list[Slice], metric: str, overall: float) -> tuple[Slice, float] | None:
    """The gated slice furthest below the overall metric (above it for lower-is-better
    metrics), with its gap; None when no gated slice has the metric."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    gaps = [(s, sign * (overall - s.metrics[metric])) for s in slices
            if s.gated and metric in s.metrics]
    return max(gaps, key=lambda item: item[1]) if gaps else None


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str


def check_gate(gate: Gate | None, metrics: dict[str, float],
               champion: dict[str, float] | None = None,
               champion_version: str | None = None,
               slices: list[Slice] | None = None) -> Verdict:
    """Pass when the metric meets `min` (a ceiling for lower-is-better metrics), with
    `beat_champion` is at least as good as the current champion's (ties pass, so a
    deterministic retrain on the same data does not fail its own gate), and with
    `max_slice_gap` no gated slice is more than that worse than the overall value."""
    if gate is None:
        return Verdict(True, "no gate configured")
    if gate.metric not in metrics:
        return Verdict(False, f"gate metric '{gate.metric}' was not computed")
    value = metrics[gate.metric]
    lower = gate.metric in LOWER_IS_BETTER
    reasons = []
    if gate.min is not None:
        ok = value <= gate.min if lower else value >= gate.min
        sign = ("<=" if ok else ">") if lower else (">=" if ok else "<")
        reasons.append((ok, f"{gate.metric} {value:.4f} {sign} {gate.min}"))
    if gate.beat_champion:
        if not champion or gate.metric not in champion:
            reasons.append((True, "no champion to beat yet"))
        else:
            best = champion[gate.metric]
            ok = value <= best if lower else value >= best
            sign = ("<=" if ok else ">") if lower else (">=" if ok else "<")
            reasons.append((ok, f"{gate.metric} {value:.4f} {sign} champion "
                                f"v{champion_version} {best:.4f}"))
    if gate.max_slice_gap is not None:
        reasons.append(_slice_condition(gate, value, slices or []))
    passed = all(ok for ok, _ in reasons)
    return Verdict(passed, "; ".join(text for _, text in reasons) or "no conditions")


def _slice_condition(gate: Gate, overall: float, slices: list[Slice]) -> tuple[bool, str]:
    ungated = sum(1 for s in slices if not s.gated)
    note = f" ({ungated} slice(s) under min_slice_rows not gated)" if ungated else ""
    found = worst_slice(slices, gate.metric, overall)
    if found is None:
        return True, f"no slice with enough rows to gate{note}"
    worst, gap = found
    where = "above" if gate.metric in LOWER_IS_BETTER else "below"
    ok = gap <= gate.max_slice_gap
    sign = "<=" if ok else ">"
    return ok, (f"worst slice {worst.label}: {gate.metric} {worst.metrics[gate.metric]:.4f} is "
                f"{gap:.4f} {where} overall {overall:.4f} ({sign} max_slice_gap "
                f"{gate.max_slice_gap}){note}")
