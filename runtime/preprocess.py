"""Preprocessing: spec ops -> statistics of the training split (one Ray Data pass) -> JSON state.

The state holds what Ray Data's stock preprocessors (StandardScaler, MinMaxScaler,
OneHotEncoder, SimpleImputer) would learn when fitted in order as a `Chain`, but it is computed
in ONE pass: each block yields partial statistics (count, nulls, mean, sum of squared
deviations, min, max; value counts where categories are needed), the driver combines them, and
the effect of each step on the next (imputing, then scaling the same column) is derived in closed
form. A stock Chain runs one Ray Data execution per fitted step, re-reads and re-transforms the
data before each fit and converts blocks to pandas for its value counts.

What is kept is plain JSON (`state`), and one pure function, `transform_frame(state, frame)`,
turns raw rows into the model's float32 matrix. Evaluation, `mlflow.pyfunc` and serving call it;
`transform_arrow` is its streaming twin for Ray Data (same numbers, no pandas), so they cannot
drift apart.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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
        if isinstance(op, Impute) and op.strategy == "constant":
            _check_fill_value(op.fill_value, columns, feature_types, where)
        # A one-hot column is a list of indicators afterwards: no later op can use it
        again = [c for c in columns if c in encoded]
        if again:
            raise InputError(f"{where}: {again} are already one-hot encoded by an earlier op")
        if isinstance(op, OneHot):
            encoded.update(columns)
        if columns:
            steps.append((op, columns))
    raw = [c for c, t in feature_types.items() if t == "categorical" and c not in encoded]
    if raw:
        raise InputError(f"data.preprocess: categorical features {raw} need an encoding; add "
                         f"{{op: one_hot, columns: {raw}}}")
    return steps


def _check_fill_value(value: Any, columns: list[str], feature_types: dict[str, str],
                      where: str) -> None:
    """A text fill in a numeric column (or a number among categories) cannot be scaled or
    sorted into categories later: say so now rather than fail halfway through a fit."""
    kind = "numeric" if isinstance(value, int | float) else "categorical"
    wrong = [c for c in columns if feature_types[c] != kind]
    if wrong:
        raise InputError(f"{where}: fill_value {value!r} does not fit the "
                         f"{'categorical' if kind == 'numeric' else 'numeric'} columns {wrong}")


# --- fit: partial statistics per block, combined on the driver --------------------------------


@dataclass(frozen=True)
class ColumnStats:
    """Statistics of one column over the rows seen so far. `mean`/`m2` (sum of squared
    deviations from the mean) combine with Chan et al.'s formula, which stays accurate where a
    plain sum of squares cancels (large mean, small spread). `counts` (value -> rows) is kept
    only for columns that need categories or a most frequent value."""

    n: int = 0  # non-null values (NaN counts as null, as in pandas' fillna)
    nulls: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float | None = None
    hi: float | None = None
    counts: dict | None = None

    def merge(self, other: ColumnStats) -> ColumnStats:
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n if n else 0.0
        m2 = self.m2 + other.m2 + (delta * delta * self.n * other.n / n if n else 0.0)
        counts = None
        if self.counts is not None or other.counts is not None:
            counts = dict(self.counts or {})
            for value, rows in (other.counts or {}).items():
                counts[value] = counts.get(value, 0) + rows
        return ColumnStats(n, self.nulls + other.nulls, mean, m2, _opt(min, self.lo, other.lo),
                           _opt(max, self.hi, other.hi), counts)

    def fill(self, value: Any) -> ColumnStats:
        """The column after its nulls are replaced by `value` (`nulls` copies of a constant:
        mean imputation keeps the mean and shrinks the variance by n / (n + nulls))."""
        if not self.nulls or value is None:
            return self
        added = {value: self.nulls}
        if not isinstance(value, int | float):  # a category: only the counts change
            return replace(self, n=self.n + self.nulls, nulls=0,
                           counts=_add_counts(self.counts, added))
        v = float(value)
        filled = ColumnStats(self.nulls, 0, v, 0.0, v, v,
                             added if self.counts is not None else None)
        return replace(self.merge(filled), nulls=0)

    def affine(self, shift: float | None, scale: float | None) -> ColumnStats:
        """The column after (x - shift) / scale, with the arithmetic transform_frame uses (so
        category keys of a scaled column match the transformed values exactly). A missing
        shift or scale makes every value NaN, as the stock scalers do."""
        if shift is None or scale is None:
            return ColumnStats(0, self.n + self.nulls, counts={} if self.counts is not None
                               else None)
        counts = None
        if self.counts is not None:
            counts = {}
            for value, rows in self.counts.items():
                key = (float(value) - shift) / scale
                counts[key] = counts.get(key, 0) + rows
        return ColumnStats(self.n, self.nulls, (self.mean - shift) / scale,
                           self.m2 / (scale * scale), _opt_affine(self.lo, shift, scale),
                           _opt_affine(self.hi, shift, scale), counts)


def _opt(pick, a, b):
    return b if a is None else a if b is None else pick(a, b)


def _opt_affine(value: float | None, shift: float, scale: float) -> float | None:
    return None if value is None else (value - shift) / scale


def _add_counts(counts: dict | None, added: dict) -> dict:
    out = dict(counts or {})
    for value, rows in added.items():
        out[value] = out.get(value, 0) + rows
    return out


def stat_columns(steps: list[tuple[Any, list]],
                 feature_types: dict[str, str]) -> tuple[list[str], list[str]]:
    """Which columns need moments (numeric ones some non-one-hot step reads) and which need
    value counts (one-hot, most frequent imputation). Other columns are not read at all."""
    moments: dict[str, None] = {}
    counts: dict[str, None] = {}
    for op, columns in steps:
        for c in columns:
            if isinstance(op, OneHot) or (isinstance(op, Impute)
                                          and op.strategy == "most_frequent"):
                counts[c] = None
            if not isinstance(op, OneHot) and feature_types[c] == "numeric":
                moments[c] = None
    return list(moments), list(counts)


def partial_stats(batch: pa.Table, moments: list[str], counts: list[str]) -> pa.Table:
    """One block -> one row holding its statistics as JSON (exact float repr; keeps ints, floats
    and strings apart). Use as `ds.map_batches(partial_stats, batch_format="pyarrow", ...)`."""
    part = {"m": {c: _block_moments(batch.column(c)) for c in moments},
            "c": {c: _block_counts(batch.column(c)) for c in counts}}
    return pa.table({"stats": [json.dumps(part)]})


def _block_moments(column: pa.ChunkedArray) -> list:
    x = _as_float64(column)
    missing = np.isnan(x)
    if missing.any():
        x = x[~missing]
    if not x.size:
        return [0, len(missing), 0.0, 0.0, None, None]
    mean = float(x.sum()) / x.size
    d = x - mean  # two-pass within the block: no cancellation from a large mean
    return [int(x.size), int(len(missing) - x.size), mean, float(d @ d), float(x.min()),
            float(x.max())]


def _block_counts(column: pa.ChunkedArray) -> list:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    counted = pc.value_counts(column)
    nulls, pairs = 0, []
    for value, rows in zip(counted.field("values").to_pylist(),
                           counted.field("counts").to_pylist(), strict=True):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            nulls += rows
        else:
            pairs.append([value, rows])
    return [nulls, pairs]


def _as_float64(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A numeric Arrow column as float64 with NaN for nulls (what pandas sees)."""
    if column.type != pa.float64():
        column = pc.cast(column, pa.float64())
    return column.to_numpy(zero_copy_only=False)


def combine_partials(rows: list[str], moments: list[str], counts: list[str]) -> dict:
    """Fold the per-block JSON rows into one ColumnStats per column. Sorted first so that the
    same blocks always give bit-identical floats, whatever order Ray returned them in."""
    stats = {c: ColumnStats() for c in dict.fromkeys([*moments, *counts])}
    for row in sorted(rows):
        part = json.loads(row)
        for c, (n, nulls, mean, m2, lo, hi) in part["m"].items():
            stats[c] = stats[c].merge(ColumnStats(n, nulls, mean, m2, lo, hi))
        for c, (nulls, pairs) in part["c"].items():
            block = ColumnStats(sum(rows for _, rows in pairs), nulls,
                                counts={value: rows for value, rows in pairs})
            stats[c] = _merge_counts(stats[c], block, c in part["m"])
    return stats


def _merge_counts(current: ColumnStats, block: ColumnStats, has_moments: bool) -> ColumnStats:
    if has_moments:  # n and nulls already came with the moments
        return replace(current, counts=_add_counts(current.counts, block.counts))
    return replace(current, n=current.n + block.n, nulls=current.nulls + block.nulls,
                   counts=_add_counts(current.counts, block.counts))


def collect_stats(train_ds, moments: list[str], counts: list[str]) -> dict[str, ColumnStats]:
    """One Ray Data execution over the training split: whole blocks as Arrow, a few hundred
    bytes back per block."""
    if not moments and not counts:
        return {}
    partials = train_ds.select_columns(list(dict.fromkeys([*moments, *counts]))).map_batches(
        partial_stats, batch_format="pyarrow", batch_size=None,
        fn_kwargs={"moments": moments, "counts": counts})
    return combine_partials([row["stats"] for row in partials.take_all()], moments, counts)


def fit_state(ops: list[PreprocessOp], train_ds, feature_types: dict[str, str]) -> dict:
    """Fit the ops on the training dataset in one Ray Data pass and return the state as JSON
    data: the same state Ray's stock preprocessors give when fitted in order as a Chain."""
    steps = plan_steps(ops, feature_types)
    stats = collect_stats(train_ds, *stat_columns(steps, feature_types)) if steps else {}
    return state_from_stats(steps, feature_types, stats)


def state_from_stats(steps: list[tuple[Any, list]], feature_types: dict[str, str],
                     stats: dict[str, ColumnStats]) -> dict:
    """Replay the steps over the column statistics: each step's state comes from the stats as
    the previous steps left them (what a Chain's sequential fits would see)."""
    stats = dict(stats)
    out = []
    for op, columns in steps:
        state: dict[str, Any] = {"op": op.op, "columns": columns}
        for c in columns:
            stats[c] = _fit_column(op, c, stats.get(c, ColumnStats()), state)
        out.append(state)
    return {
        "version": STATE_VERSION,
        "features": list(feature_types),
        "feature_types": dict(feature_types),
        "steps": out,
    }


def _fit_column(op: PreprocessOp, column: str, cs: ColumnStats, state: dict) -> ColumnStats:
    """Write this column's fitted values into `state`; return its stats after the step."""
    if isinstance(op, StandardScale):
        mean = cs.mean if cs.n else None
        std = math.sqrt(cs.m2 / cs.n) if cs.n else None  # population std (ddof=0), as Ray's
        state.setdefault("mean", {})[column] = mean
        state.setdefault("std", {})[column] = std
        return cs.affine(mean, None if std is None else std if std >= _EPSILON else 1.0)
    if isinstance(op, MinMaxScale):
        lo, hi = (cs.lo, cs.hi) if cs.n else (None, None)
        state.setdefault("min", {})[column] = lo
        state.setdefault("max", {})[column] = hi
        spread = None if lo is None else (hi - lo if hi - lo >= _EPSILON else 1.0)
        return cs.affine(lo, spread)
    if isinstance(op, OneHot):
        state.setdefault("categories", {})[column] = _categories(cs, column, op.max_categories)
        return cs
    value = _fill_value(op, cs)
    state.setdefault("values", {})[column] = value
    return cs.fill(value)


def _fill_value(op: Impute, cs: ColumnStats) -> Any:
    if op.strategy == "constant":
        return op.fill_value
    if op.strategy == "mean":
        return cs.mean if cs.n else None
    return _most_frequent(cs.counts or {})


def _most_frequent(counts: dict) -> Any:
    """The most frequent value; ties go to the smallest value (Ray's Counter picks whichever
    block it saw first, which depends on scheduling)."""
    ranked = sorted(counts)
    return max(ranked, key=lambda v: counts[v]) if ranked else None


def _categories(cs: ColumnStats, column: str, max_categories: int | None) -> list:
    """Sorted values, as Ray's OneHotEncoder indexes them; with max_categories, the most
    frequent ones (ties to the smaller value), still sorted."""
    if cs.nulls:
        raise InputError(f"one_hot: column {column!r} has {cs.nulls} missing values in the "
                         f"training split; impute it first, e.g. {{op: impute, columns: "
                         f"[{column}], strategy: most_frequent}}")
    values = sorted(cs.counts or {})
    if max_categories:
        values = sorted(sorted(values, key=lambda v: -cs.counts[v])[:max_categories])
    return values


# --- transform --------------------------------------------------------------------------------


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


class _NeedsPandas(Exception):
    """A column the Arrow fast path does not cover: the batch goes through transform_frame."""


def transform_arrow(batch: pa.Table, state: dict, label: str | None = None,
                    output: str = "x") -> pa.Table:
    """Raw Arrow rows -> a table with the float32 model matrix as tensor column `output` (and
    `label` passed through unchanged): the same numbers as transform_frame, computed with numpy
    on the Arrow buffers instead of through pandas. Use as
    `ds.map_batches(transform_arrow, batch_format="pyarrow", fn_kwargs={"state": state, ...})`.
    """
    from ray.data.extensions import ArrowTensorArray

    columns = {output: ArrowTensorArray.from_numpy(transform_matrix(state, batch))}
    if label is not None:
        columns[label] = batch.column(label)
    return pa.table(columns)


def transform_matrix(state: dict, batch: pa.Table) -> np.ndarray:
    """Raw Arrow rows -> the float32 model matrix (transform_frame's numbers, without pandas)."""
    missing = [c for c in state["features"] if c not in batch.column_names]
    if missing:
        raise InputError(f"missing feature columns: {missing}")
    try:
        return _matrix_arrow(state, batch)
    except _NeedsPandas:
        return transform_frame(state, batch.select(state["features"]).to_pandas())


def _matrix_arrow(state: dict, batch: pa.Table) -> np.ndarray:
    onehot = _onehot_categories(state)
    steps: dict[str, list[dict]] = {c: [] for c in state["features"]}
    for step in state["steps"]:
        if step["op"] != "one_hot":
            for c in step["columns"]:
                steps[c].append(step)
    width = sum(len(onehot[c]) if c in onehot else 1 for c in state["features"])
    out = np.zeros((batch.num_rows, width), dtype=np.float32)
    j = 0
    for c in state["features"]:
        column = batch.column(c)
        if c in onehot:
            _one_hot_into(out[:, j:j + len(onehot[c])], column, c, steps[c], onehot[c])
            j += len(onehot[c])
        else:
            out[:, j] = _numeric_arrow(column, c, steps[c])  # float64 -> float32, as astype
            j += 1
    return out


def _numeric_arrow(column: pa.ChunkedArray, name: str, steps: list[dict]) -> np.ndarray:
    """transform_frame's _apply, step by step, on a float64 view of the Arrow column."""
    if not _is_numeric(column.type):
        raise _NeedsPandas
    x = _as_float64(column)
    for step in steps:
        if step["op"] == "impute":
            value = step["values"][name]
            if not isinstance(value, int | float):  # pandas decides what None/text fill means
                raise _NeedsPandas
            missing = np.isnan(x)
            if missing.any():
                x = np.where(missing, float(value), x)
            continue
        lo, hi = ("mean", "std") if step["op"] == "standard_scale" else ("min", "max")
        shift, spread = step[lo][name], step[hi][name]
        if shift is None or spread is None:
            x = np.full(len(x), np.nan)
            continue
        if step["op"] == "min_max_scale":
            spread = spread - shift
        x = (x - shift) / (spread if spread >= _EPSILON else 1.0)
    return x


def _one_hot_into(block: np.ndarray, column: pa.ChunkedArray, name: str, steps: list[dict],
                  categories: list) -> None:
    """Set the indicator of each row's category in `block` (zeros already); unknown values and
    nulls stay all zeros, as in transform_frame."""
    if _is_numeric(column.type):
        x = _numeric_arrow(column, name, steps)
        for k, value in enumerate(categories):
            block[:, k] = x == value
        return
    if not _is_text(column.type) or not all(isinstance(v, str) for v in categories):
        raise _NeedsPandas
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    for step in steps:  # only imputation reaches a text column (plan_steps checks)
        value = step["values"][name]
        if not isinstance(value, str):
            raise _NeedsPandas
        column = pc.fill_null(column, pa.scalar(value, column.type))
    codes = pc.index_in(column, value_set=pa.array(categories, column.type))
    codes = pc.fill_null(codes, -1).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(codes >= 0)
    block[rows, codes[rows]] = 1.0


def _is_numeric(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_boolean(dtype)


def _is_text(dtype: pa.DataType) -> bool:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
