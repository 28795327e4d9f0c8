"""Preprocessing: spec ops -> statistics of the training split (one Ray Data pass) -> JSON state.

The state holds what Ray Data's stock preprocessors (StandardScaler, MinMaxScaler,
OneHotEncoder, OrdinalEncoder, SimpleImputer) would learn when fitted in order as a `Chain`,
but it is computed in ONE pass: each block yields partial statistics (count, nulls, mean, sum of
squared deviations, min, max; value counts where categories are needed), the driver combines
them, and the effect of each step on the next (imputing, then scaling the same column) is
derived in closed form. A stock Chain runs one Ray Data execution per fitted step, re-reads and
re-transforms the data before each fit and converts blocks to pandas for its value counts.

The stateless ops (log1p, clip) are not affine, so their effect cannot be derived afterwards:
each block applies them itself and keeps statistics at each level (raw, after the first
stateless op, ...); that is why they must come before the scalers of their column. Imputed
values are added back in closed form at every level. `runtime.features.apply` applies the
state.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from runtime.errors import InputError
from runtime.features.apply import ENCODERS, EPSILON, STATELESS, apply_stateless, as_float64
from runtime.features.state import PreprocessState, Step, step_from_json
from runtime.spec import Impute, MinMaxScale, PreprocessOp, StandardScale

NUMERIC_ONLY = ("standard_scale", "min_max_scale", "log1p", "clip")


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
    """Resolve each op's columns and check it fits the column types and the order rules
    (no Ray needed)."""
    steps = []
    encoded: dict[str, str] = {}  # column -> the encoder op that ended it
    scaled: dict[str, str] = {}
    for i, op in enumerate(ops):
        where = f"data.preprocess[{i}]"
        columns = resolve_columns(op.columns, feature_types, where)
        if op.op in NUMERIC_ONLY or (isinstance(op, Impute) and op.strategy == "mean"):
            wrong = [c for c in columns if feature_types[c] != "numeric"]
            if wrong:
                raise InputError(f"{where}: {op.op} needs numeric columns, {wrong} are categorical")
        if isinstance(op, Impute) and op.strategy == "constant":
            _check_fill_value(op.fill_value, columns, feature_types, where)
        # An encoded column is indicators or codes afterwards: no later op can use it
        again = [c for c in columns if c in encoded]
        if again:
            raise InputError(f"{where}: {again} are already encoded by an earlier "
                             f"{encoded[again[0]]} op")
        if op.op in STATELESS and op.op not in ENCODERS:
            late = [c for c in columns if c in scaled]
            if late:
                raise InputError(f"{where}: {op.op} on {late} comes after {scaled[late[0]]}; put "
                                 f"log1p and clip before the scalers of a column")
        if op.op in ENCODERS:
            encoded.update(dict.fromkeys(columns, op.op))
        if isinstance(op, StandardScale | MinMaxScale):
            scaled.update(dict.fromkeys(columns, op.op))
        if columns:
            steps.append((op, columns))
    raw = [c for c, t in feature_types.items() if t == "categorical" and c not in encoded]
    if raw:
        raise InputError(f"data.preprocess: categorical features {raw} need an encoding; add "
                         f"{{op: one_hot, columns: {raw}}} (or ordinal, hash_bucket)")
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


Key = tuple[str, int]  # (column, how many of its log1p/clip steps have been applied)


@dataclass(frozen=True)
class StatPlan:
    """What the one pass computes per block: moments and/or value counts of each column at
    each level where a fitted step reads it; `stateless` holds each column's log1p/clip steps
    (their fitted steps) so that a block can bring a column to a level itself."""

    moments: tuple[Key, ...] = ()
    counts: tuple[Key, ...] = ()
    stateless: dict[str, list[Step]] = field(default_factory=dict)

    def columns(self) -> list[str]:
        return list(dict.fromkeys(c for c, _ in (*self.moments, *self.counts)))


def step_params(op: PreprocessOp) -> dict:
    """The state of a step that needs no fitting (everything comes from the spec)."""
    if op.op == "clip":
        return {"min": op.min, "max": op.max}
    if op.op == "hash_bucket":
        return {"buckets": op.buckets}
    return {}


def stat_plan(steps: list[tuple[Any, list]], feature_types: dict[str, str]) -> StatPlan:
    """Moments for numeric columns read by a scaler or an imputer, value counts for columns
    read by one_hot, ordinal or most frequent imputation, at every level they are read at.
    Columns no fitted step reads are not read at all."""
    stateless: dict[str, list[Step]] = {}
    reads: dict[str, dict[int, None]] = {}
    moments, counts = set(), set()
    for op, columns in steps:
        for c in columns:
            if op.op in STATELESS:
                if op.op not in ENCODERS:
                    stateless.setdefault(c, []).append(
                        step_from_json({"op": op.op, "columns": [c], **step_params(op)}))
                continue
            reads.setdefault(c, {})[len(stateless.get(c, []))] = None
            if op.op in ("one_hot", "ordinal") or (isinstance(op, Impute)
                                                    and op.strategy == "most_frequent"):
                counts.add(c)
            if op.op not in ENCODERS and feature_types[c] == "numeric":
                moments.add(c)
    keys = [(c, level) for c, levels in reads.items() for level in levels]
    return StatPlan(tuple(k for k in keys if k[0] in moments),
                    tuple(k for k in keys if k[0] in counts),
                    {c: s for c, s in stateless.items() if c in reads})


def partial_stats(batch: pa.Table, plan: StatPlan) -> pa.Table:
    """One block -> one row holding its statistics as JSON (exact float repr; keeps ints, floats
    and strings apart). Use as `ds.map_batches(partial_stats, batch_format="pyarrow", ...)`."""
    batch = batch.combine_chunks()  # one contiguous buffer per column: ~2x faster below
    levels: dict[Key, np.ndarray] = {}

    def values(c: str, level: int) -> np.ndarray:
        if (c, level) not in levels:
            x = as_float64(batch.column(c)) if level == 0 else values(c, level - 1)
            levels[c, level] = apply_stateless(plan.stateless[c][level - 1], x) if level else x
        return levels[c, level]

    part = {"m": [[c, lv, _block_moments(values(c, lv))] for c, lv in plan.moments],
            "c": [[c, lv, _block_counts(batch.column(c) if lv == 0 else pa.array(values(c, lv)))]
                  for c, lv in plan.counts]}
    return pa.table({"stats": [json.dumps(part)]})


def _block_moments(x: np.ndarray) -> list:
    missing = np.isnan(x)
    if missing.any():
        x = x[~missing]
    if not x.size:
        return [0, len(missing), 0.0, 0.0, None, None]
    mean = float(x.sum()) / x.size
    d = x - mean  # two-pass within the block: no cancellation from a large mean
    return [int(x.size), int(len(missing) - x.size), mean, float(d @ d), float(x.min()),
            float(x.max())]


def _block_counts(column: pa.ChunkedArray | pa.Array) -> list:
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


def combine_partials(rows: list[str]) -> dict[Key, ColumnStats]:
    """Fold the per-block JSON rows into one ColumnStats per (column, level). Sorted first so
    that the same blocks always give bit-identical floats, whatever order Ray returned them in."""
    stats: dict[Key, ColumnStats] = {}
    for row in sorted(rows):
        part = json.loads(row)
        with_moments = set()
        for c, level, (n, nulls, mean, m2, lo, hi) in part["m"]:
            key = (c, level)
            with_moments.add(key)
            block = ColumnStats(n, nulls, mean, m2, lo, hi)
            stats[key] = stats.get(key, ColumnStats()).merge(block)
        for c, level, (nulls, pairs) in part["c"]:
            key = (c, level)
            block = ColumnStats(sum(rows for _, rows in pairs), nulls,
                                counts={value: rows for value, rows in pairs})
            stats[key] = _merge_counts(stats.get(key, ColumnStats()), block, key in with_moments)
    return stats


def _merge_counts(current: ColumnStats, block: ColumnStats, has_moments: bool) -> ColumnStats:
    if has_moments:  # n and nulls already came with the moments
        return replace(current, counts=_add_counts(current.counts, block.counts))
    return replace(current, n=current.n + block.n, nulls=current.nulls + block.nulls,
                   counts=_add_counts(current.counts, block.counts))


def collect_stats(train_ds, plan: StatPlan) -> dict[Key, ColumnStats]:
    """One Ray Data execution over the training split: whole blocks as Arrow, a few hundred
    bytes back per block. A split already in memory (a pandas frame) is one block, read here."""
    if not plan.columns():
        return {}
    if isinstance(train_ds, pd.DataFrame):
        block = pa.Table.from_pandas(train_ds[plan.columns()], preserve_index=False)
        return combine_partials([partial_stats(block, plan).column("stats")[0].as_py()])
    partials = train_ds.select_columns(plan.columns()).map_batches(
        partial_stats, batch_format="pyarrow", batch_size=None, fn_kwargs={"plan": plan})
    return combine_partials([row["stats"] for row in partials.take_all()])


def fit_state(ops: list[PreprocessOp], train_ds,
              feature_types: dict[str, str]) -> PreprocessState:
    """Fit the ops on the training dataset in one Ray Data pass: the same state Ray's stock
    preprocessors give when fitted in order as a Chain."""
    steps = plan_steps(ops, feature_types)
    stats = collect_stats(train_ds, stat_plan(steps, feature_types)) if steps else {}
    return state_from_stats(steps, feature_types, stats)


def state_from_stats(steps: list[tuple[Any, list]], feature_types: dict[str, str],
                     stats: dict[Key, ColumnStats]) -> PreprocessState:
    """Replay the steps over the column statistics: each step's state comes from the stats as
    the previous steps left them (what a Chain's sequential fits would see). A fitted step
    reading a column at a new level starts from that level's collected stats plus the values
    imputed earlier, carried through the stateless steps in between."""
    stateless: dict[str, list[Step]] = {}
    current: dict[str, tuple[int, ColumnStats]] = {}
    imputed: dict[str, list[tuple[Any, int, int]]] = {}  # (value, rows, level) per column
    out = []
    for op, columns in steps:
        state: dict[str, Any] = {"op": op.op, "columns": columns, **step_params(op)}
        for c in columns:
            if op.op in STATELESS:
                if op.op not in ENCODERS:
                    stateless.setdefault(c, []).append(step_from_json(state))
                continue
            level = len(stateless.get(c, []))
            if c not in current or current[c][0] != level:
                current[c] = (level, _at_level(stats.get((c, level), ColumnStats()),
                                               imputed.get(c, []), stateless.get(c, []), level))
            before = current[c][1]
            after = _fit_column(op, c, before, state)
            current[c] = (level, after)
            if isinstance(op, Impute) and before.nulls and state["values"][c] is not None:
                imputed.setdefault(c, []).append((state["values"][c], before.nulls, level))
        out.append(state)
    return PreprocessState(features=tuple(feature_types), feature_types=dict(feature_types),
                           steps=tuple(step_from_json(s) for s in out))


def _at_level(cs: ColumnStats, imputed: list[tuple[Any, int, int]], stateless: list[Step],
              level: int) -> ColumnStats:
    """Collected stats (raw non-null values through `level` stateless steps) plus the rows an
    earlier imputation filled, their value carried through the same steps."""
    for value, rows, at in imputed:
        if not isinstance(value, int | float):
            continue
        x = np.array([float(value)])
        for step in stateless[at:level]:
            x = apply_stateless(step, x)
        v = float(x[0])
        filled = ColumnStats(rows, 0, v, 0.0, v, v, {v: rows} if cs.counts is not None else None)
        cs = replace(cs, nulls=cs.nulls - rows).merge(filled)
    return cs


def _fit_column(op: PreprocessOp, column: str, cs: ColumnStats, state: dict) -> ColumnStats:
    """Write this column's fitted values into `state`; return its stats after the step."""
    if isinstance(op, StandardScale):
        mean = cs.mean if cs.n else None
        std = math.sqrt(cs.m2 / cs.n) if cs.n else None  # population std (ddof=0), as Ray's
        state.setdefault("mean", {})[column] = mean
        state.setdefault("std", {})[column] = std
        return cs.affine(mean, None if std is None else std if std >= EPSILON else 1.0)
    if isinstance(op, MinMaxScale):
        lo, hi = (cs.lo, cs.hi) if cs.n else (None, None)
        state.setdefault("min", {})[column] = lo
        state.setdefault("max", {})[column] = hi
        spread = None if lo is None else (hi - lo if hi - lo >= EPSILON else 1.0)
        return cs.affine(lo, spread)
    if op.op == "one_hot":
        state.setdefault("categories", {})[column] = _categories(cs, column, op.max_categories)
        return cs
    if op.op == "ordinal":  # nulls become -1, as unseen values do
        state.setdefault("categories", {})[column] = sorted(cs.counts or {})
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
