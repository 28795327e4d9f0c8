"""Evaluate stage: metrics on the test split and the promotion gate. Pure functions, no Ray."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.spec import Gate

LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})


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
class Verdict:
    passed: bool
    reason: str


def check_gate(gate: Gate | None, metrics: dict[str, float],
               champion: dict[str, float] | None = None,
               champion_version: str | None = None) -> Verdict:
    """Pass when the metric meets `min` (a ceiling for lower-is-better metrics) and, with
    `beat_champion`, is at least as good as the current champion's (ties pass, so a
    deterministic retrain on the same data does not fail its own gate)."""
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
    passed = all(ok for ok, _ in reasons)
    return Verdict(passed, "; ".join(text for _, text in reasons) or "no conditions")
