"""Preprocessing: spec ops -> Ray Data preprocessors fitted on the training split -> JSON state.

The fitted statistics come from Ray Data's preprocessors (distributed aggregations). What is
kept is plain JSON (`state`), and one pure function, `transform_frame(state, frame)`, turns raw
rows into the model's float32 matrix. Training (inside Ray Data `map_batches`), evaluation,
`mlflow.pyfunc` and serving all call that same function, so they cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from runtime.errors import InputError
from runtime.spec import Impute, MinMaxScale, OneHot, PreprocessOp, StandardScale

STATE_VERSION = 1
_EPSILON = 1e-8  # Ray Data's scalers treat a smaller spread as constant (divide by 1)


def resolve_columns(selector: Any, feature_types: dict[str, str], where: str) -> list[str]:
    if selector == "all":
        return list(feature_types)
    if selector in ("numeric", "categorical"):
        return [c for c, t in feature_types.items() if t == selector]
    unknown = [c for c in selector if c not in feature_types]
    if unknown:
        raise InputError(f"{where}.columns: {unknown} are not features "
                         f"(features: {', '.join(list(feature_types)[:12])})")
    return list(selector)


def plan_steps(ops: list[PreprocessOp], feature_types: dict[str, str]) -> list[tuple[Any, list]]:
    """Resolve each op's columns and check it fits the column types (no Ray needed)."""
    steps = []
    encoded: set[str] = set()
    for i, op in enumerate(ops):
        where = f"data.preprocess[{i}]"
        columns = resolve_columns(op.columns, feature_types, where)
        if isinstance(op, StandardScale | MinMaxScale) or (
            isinstance(op, Impute) and op.strategy == "mean"
        ):
            wrong = [c for c in columns if feature_types[c] != "numeric"]
            if wrong:
                raise InputError(f"{where}: {op.op} needs numeric columns, {wrong} are categorical")
        if isinstance(op, OneHot):
            encoded.update(columns)
        if columns:
            steps.append((op, columns))
    raw = [c for c, t in feature_types.items() if t == "categorical" and c not in encoded]
    if raw:
        raise InputError(f"data.preprocess: categorical features {raw} need an encoding; add "
                         f"{{op: one_hot, columns: {raw}}}")
    return steps


def fit_state(ops: list[PreprocessOp], train_ds, feature_types: dict[str, str]) -> dict:
    """Fit Ray Data preprocessors on the training dataset and return their state as JSON data."""
    from ray.data.preprocessors import (
        Chain,
        MinMaxScaler,
        OneHotEncoder,
        SimpleImputer,
        StandardScaler,
    )

    steps = plan_steps(ops, feature_types)
    fitted = []
    for op, columns in steps:
        if isinstance(op, StandardScale):
            fitted.append(StandardScaler(columns=columns))
        elif isinstance(op, MinMaxScale):
            fitted.append(MinMaxScaler(columns=columns))
        elif isinstance(op, OneHot):
            fitted.append(OneHotEncoder(columns=columns, max_categories=_max_cats(op, columns)))
        else:
            fitted.append(SimpleImputer(columns=columns, strategy=op.strategy,
                                        fill_value=op.fill_value))
    if fitted:
        Chain(*fitted).fit(train_ds)
    return {
        "version": STATE_VERSION,
        "features": list(feature_types),
        "feature_types": dict(feature_types),
        "steps": [_step_state(op, cols, p) for (op, cols), p in zip(steps, fitted, strict=True)],
    }


def _max_cats(op: OneHot, columns: list[str]) -> dict[str, int] | None:
    return {c: op.max_categories for c in columns} if op.max_categories else None


def _step_state(op: PreprocessOp, columns: list[str], fitted) -> dict:
    stats = fitted.stats_
    state: dict[str, Any] = {"op": op.op, "columns": columns}
    if isinstance(op, StandardScale):
        state["mean"] = {c: _num(stats[f"mean({c})"]) for c in columns}
        state["std"] = {c: _num(stats[f"std({c})"]) for c in columns}
    elif isinstance(op, MinMaxScale):
        state["min"] = {c: _num(stats[f"min({c})"]) for c in columns}
        state["max"] = {c: _num(stats[f"max({c})"]) for c in columns}
    elif isinstance(op, OneHot):
        state["categories"] = {c: _categories(stats[f"unique_values({c})"]) for c in columns}
    elif op.strategy == "constant":
        state["values"] = {c: op.fill_value for c in columns}
    else:
        state["values"] = {c: _py(stats[f"{op.strategy}({c})"]) for c in columns}
    return state


def _categories(stat) -> list:
    """Ray keeps a category map as {value: index} or as Arrow (keys, indices); return values in
    index order."""
    if isinstance(stat, dict):
        pairs = stat.items()
    else:
        keys, indices = stat
        pairs = zip(keys.to_pylist(), indices.to_pylist(), strict=False)
    return [_py(value) for value, _ in sorted(pairs, key=lambda kv: kv[1])]


def _num(value) -> float | None:
    return None if value is None else float(value)


def _py(value):
    return value.item() if isinstance(value, np.generic) else value


def output_columns(state: dict) -> list[str]:
    """Names of the model's input columns after preprocessing, in matrix order."""
    onehot = _onehot_categories(state)
    names = []
    for column in state["features"]:
        if column in onehot:
            names.extend(f"{column}={value}" for value in onehot[column])
        else:
            names.append(column)
    return names


def _onehot_categories(state: dict) -> dict[str, list]:
    cats: dict[str, list] = {}
    for step in state["steps"]:
        if step["op"] == "one_hot":
            cats.update(step["categories"])
    return cats


def transform_frame(state: dict, frame: pd.DataFrame) -> np.ndarray:
    """Raw feature rows -> float32 matrix, exactly as at training time. Unknown categories
    encode as all zeros; a missing feature column raises InputError naming it."""
    missing = [c for c in state["features"] if c not in frame.columns]
    if missing:
        raise InputError(f"missing feature columns: {missing}")
    columns = {c: frame[c] for c in state["features"]}
    for step in state["steps"]:
        for c in step["columns"]:
            columns[c] = _apply(step, c, columns[c])
    onehot = _onehot_categories(state)
    blocks = []
    for c in state["features"]:
        if c in onehot:
            values = columns[c].to_numpy(dtype=object)
            blocks.append(np.stack([values == v for v in onehot[c]], axis=1)
                          if onehot[c] else np.zeros((len(frame), 0)))
        else:
            blocks.append(pd.to_numeric(columns[c], errors="coerce")
                          .to_numpy(dtype=np.float64, na_value=np.nan)[:, None])
    if not blocks:
        return np.zeros((len(frame), 0), dtype=np.float32)
    return np.concatenate(blocks, axis=1).astype(np.float32, copy=False)


def _apply(step: dict, column: str, series: pd.Series) -> pd.Series:
    op = step["op"]
    if op == "impute":
        return series.fillna(step["values"][column])
    if op == "standard_scale":
        mean, std = step["mean"][column], step["std"][column]
        if mean is None or std is None:
            return pd.Series(np.nan, index=series.index)
        return (series.astype(np.float64) - mean) / (std if std >= _EPSILON else 1.0)
    if op == "min_max_scale":
        lo, hi = step["min"][column], step["max"][column]
        if lo is None or hi is None:
            return pd.Series(np.nan, index=series.index)
        spread = hi - lo
        return (series.astype(np.float64) - lo) / (spread if spread >= _EPSILON else 1.0)
    return series  # one_hot is applied when the matrix is assembled
