"""Apply a fitted preprocessing state (runtime.features.fit) to raw rows.

`transform_frame(state, frame)` turns raw rows (pandas) into the model's float32 matrix;
evaluation, `mlflow.pyfunc` and serving call it. `transform_matrix` / `transform_arrow` are its
streaming twins for Ray Data: the same numbers computed with numpy on the Arrow buffers, no
pandas, so training and serving cannot drift apart (tests compare them on every op).

Per column the steps run in spec order; an encoder (one_hot, ordinal, hash_bucket) is the last
step of its column and decides its output columns:

    one_hot       one indicator per fitted category ("color=red"); unseen or null -> all zeros
    ordinal       one column, the index among the fitted categories; unseen or null -> -1
    hash_bucket   `buckets` indicators ("color#0".."color#15") by a stable hash of the value
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from runtime.data.arrow import is_numeric, is_text
from runtime.errors import InputError
from runtime.features.state import PreprocessState, Step

EPSILON = 1e-8  # Ray Data's scalers treat a smaller spread as constant (divide by 1)
ENCODERS = ("one_hot", "ordinal", "hash_bucket")
STATELESS = ("log1p", "clip", "hash_bucket")  # nothing to fit


def apply_stateless(step: Step, x: np.ndarray) -> np.ndarray:
    """log1p / clip on a float64 array (NaN stays NaN). Also used by the fit, on each block."""
    if step.op == "log1p":
        return np.sign(x) * np.log1p(np.abs(x))
    lo = -np.inf if step.min is None else step.min
    hi = np.inf if step.max is None else step.max
    return np.clip(x, lo, hi)


def as_float64(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A numeric Arrow column as float64 with NaN for nulls (what pandas sees)."""
    if column.type != pa.float64():
        column = pc.cast(column, pa.float64())
    return column.to_numpy(zero_copy_only=False)


def bucket_of(value: Any, buckets: int) -> int:
    """Stable across processes and machines (unlike hash()); -1 for null. An integral float
    hashes like the integer, so 3, 3.0 and a JSON 3 land in the same bucket."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return -1
    integral = isinstance(value, float | np.floating) and float(value).is_integer()
    if integral or isinstance(value, bool | np.bool_ | np.integer):
        value = int(value)
    digest = hashlib.blake2b(str(value).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


def encoders(state: PreprocessState) -> dict[str, Step]:
    """Column -> the encoder step that ends it."""
    return {c: step for step in state.steps if step.op in ENCODERS for c in step.columns}


def output_columns(state: PreprocessState) -> list[str]:
    """Names of the model's input columns after preprocessing, in matrix order."""
    enc = encoders(state)
    names = []
    for column in state.features:
        step = enc.get(column)
        if step is None or step.op == "ordinal":
            names.append(column)
        elif step.op == "one_hot":
            names.extend(f"{column}={value}" for value in step.categories[column])
        else:
            names.extend(f"{column}#{b}" for b in range(step.buckets))
    return names


def _width(step: Step | None, column: str) -> int:
    if step is None or step.op == "ordinal":
        return 1
    return len(step.categories[column]) if step.op == "one_hot" else step.buckets


# --- pandas ---------------------------------------------------------------------------------


def transform_frame(state: PreprocessState, frame: pd.DataFrame) -> np.ndarray:
    """Raw feature rows -> float32 matrix, exactly as at training time. A missing feature
    column raises InputError naming it."""
    missing = [c for c in state.features if c not in frame.columns]
    if missing:
        raise InputError(f"missing feature columns: {missing}")
    columns = {c: frame[c] for c in state.features}
    for step in state.steps:
        if step.op not in ENCODERS:
            for c in step.columns:
                columns[c] = _apply(step, c, columns[c])
    enc = encoders(state)
    blocks = []
    for c in state.features:
        step = enc.get(c)
        if step is None:
            blocks.append(pd.to_numeric(columns[c], errors="coerce")
                          .to_numpy(dtype=np.float64, na_value=np.nan)[:, None])
            continue
        values = columns[c].to_numpy(dtype=object)
        if step.op == "one_hot":
            cats = step.categories[c]
            blocks.append(np.stack([values == v for v in cats], axis=1)
                          if cats else np.zeros((len(frame), 0)))
        elif step.op == "ordinal":
            codes = pd.Index(step.categories[c], dtype=object).get_indexer(values)
            blocks.append(codes.astype(np.float64)[:, None])
        else:
            uniques, inverse = _unique(values)
            buckets = np.array([bucket_of(v, step.buckets) for v in uniques], dtype=np.int64)
            blocks.append(_indicators(buckets[inverse] if len(uniques) else
                                      np.full(len(values), -1), step.buckets))
    if not blocks:
        return np.zeros((len(frame), 0), dtype=np.float32)
    return np.concatenate(blocks, axis=1).astype(np.float32, copy=False)


def _unique(values: np.ndarray) -> tuple[list, np.ndarray]:
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    listed = list(uniques) + [None]  # code -1 (null) indexes the trailing None
    return listed, np.where(codes < 0, len(listed) - 1, codes)


def _indicators(index: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((len(index), width), dtype=np.float32)
    rows = np.flatnonzero(index >= 0)
    out[rows, index[rows]] = 1.0
    return out


def _apply(step: Step, column: str, series: pd.Series) -> pd.Series:
    op = step.op
    if op == "impute":
        return series.fillna(step.values[column])
    if op in STATELESS:
        x = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return pd.Series(apply_stateless(step, x), index=series.index)
    shift, spread = _affine(step, column)
    if shift is None:
        return pd.Series(np.nan, index=series.index)
    return (series.astype(np.float64) - shift) / spread


def _affine(step: Step, column: str) -> tuple[float | None, float]:
    """(shift, divisor) of a scaler; (None, 1) when the column had no values to fit on."""
    lo, hi = ("mean", "std") if step.op == "standard_scale" else ("min", "max")
    shift, spread = getattr(step, lo)[column], getattr(step, hi)[column]
    if shift is None or spread is None:
        return None, 1.0
    if step.op == "min_max_scale":
        spread = spread - shift
    return shift, spread if spread >= EPSILON else 1.0


# --- Arrow ------------------------------------------------------------------------------------


class _NeedsPandas(Exception):
    """A column the Arrow fast path does not cover: the batch goes through transform_frame."""


def transform_arrow(batch: pa.Table, state: PreprocessState, label: str | None = None,
                    output: str = "x") -> pa.Table:
    """Raw Arrow rows -> a table with the float32 model matrix as tensor column `output` (and
    `label` passed through unchanged). Use as
    `ds.map_batches(transform_arrow, batch_format="pyarrow", fn_kwargs={"state": state, ...})`.
    """
    from ray.data.extensions import ArrowTensorArray

    columns = {output: ArrowTensorArray.from_numpy(transform_matrix(state, batch))}
    if label is not None:
        columns[label] = batch.column(label)
    return pa.table(columns)


def transform_matrix(state: PreprocessState, batch: pa.Table) -> np.ndarray:
    """Raw Arrow rows -> the float32 model matrix (transform_frame's numbers, without pandas)."""
    missing = [c for c in state.features if c not in batch.column_names]
    if missing:
        raise InputError(f"missing feature columns: {missing}")
    try:
        return _matrix_arrow(state, batch)
    except _NeedsPandas:
        return transform_frame(state, batch.select(list(state.features)).to_pandas())


def _matrix_arrow(state: PreprocessState, batch: pa.Table) -> np.ndarray:
    enc = encoders(state)
    steps = _column_steps(state)
    widths = [_width(enc.get(c), c) for c in state.features]
    out = np.zeros((batch.num_rows, sum(widths)), dtype=np.float32)
    j = 0
    for c, width in zip(state.features, widths, strict=True):
        column, step = batch.column(c), enc.get(c)
        if step is None:
            out[:, j] = _numeric_arrow(column, c, steps[c])  # float64 -> float32, as astype
        else:
            _encode_into(out[:, j:j + width], column, c, steps[c], step)
        j += width
    return out


def _numeric_arrow(column: pa.ChunkedArray, name: str, steps: list[Step]) -> np.ndarray:
    """transform_frame's _apply, step by step, on a float64 view of the Arrow column."""
    if not is_numeric(column.type):
        raise _NeedsPandas
    return _numeric_steps(as_float64(column), name, steps)


def _numeric_steps(x: np.ndarray, name: str, steps: list[Step]) -> np.ndarray:
    """A column's non-encoder steps on its float64 values (NaN = null)."""
    for step in steps:
        x = _numeric_step(step, [name], x[:, None])[:, 0]
    return x


def _numeric_step(step: Step, names: Sequence[str], x: np.ndarray) -> np.ndarray:
    """One non-encoder step on float64 columns `names` (x: rows x len(names), NaN = null)."""
    return _numeric_function(step, names)(x)


def _column_steps(state: PreprocessState) -> dict[str, list[Step]]:
    steps: dict[str, list[Step]] = {c: [] for c in state.features}
    for step in state.steps:
        if step.op not in ENCODERS:
            for c in step.columns:
                steps[c].append(step)
    return steps


def transform_numeric(state: PreprocessState, x: np.ndarray,
                      compiled: NumericTransform | None = None) -> np.ndarray:
    """Raw rows of numbers (float64, NaN = null, columns in `state.features` order) -> the
    model matrix: transform_frame's numbers without a DataFrame or a table, for the small
    requests of online serving, where pandas' per-column overhead is most of the cost.
    `compiled`: `NumericTransform(state)`, kept by a caller that transforms many times."""
    if x.ndim != 2 or x.shape[1] != len(state.features):
        raise InputError(f"expected rows of {len(state.features)} values, got shape "
                         f"{x.shape}")
    steps = compiled if compiled is not None else NumericTransform(state)
    if not steps.numeric:
        return transform_frame(state, pd.DataFrame(x, columns=list(state.features)))
    # a C-ordered copy (as transform_frame returns: BLAS sums depend on the layout)
    out = np.array(x, dtype=np.float64, order="C")
    for columns, apply in steps.steps:
        out[:, columns] = apply(out[:, columns])
    return out.astype(np.float32)


class NumericTransform:
    """A state's steps for transform_numeric with their constants worked out once (a scaler's
    shifts and spreads, an imputer's values, the columns' positions): per request only the
    arithmetic is left. `numeric` is False when a step needs pandas (an encoder, a text fill)."""

    def __init__(self, state: PreprocessState):
        self.steps: list[tuple[Any, Any]] = []
        self.numeric = not encoders(state)
        position = {c: j for j, c in enumerate(state.features)}
        for step in state.steps if self.numeric else ():
            idx = [position[c] for c in step.columns]
            columns = slice(None) if idx == list(range(len(position))) else idx
            try:
                self.steps.append((columns, _numeric_function(step, step.columns)))
            except _NeedsPandas:
                self.numeric, self.steps = False, []
                break


def _numeric_function(step: Step, names: Sequence[str]):
    """One non-encoder step on float64 columns `names` as a function of x (rows x
    len(names), NaN = null), its constants computed now."""
    if step.op == "impute":
        values = [step.values[c] for c in names]
        if not all(isinstance(v, int | float) for v in values):
            raise _NeedsPandas  # pandas decides what None/text fill means
        fill = np.array(values, dtype=np.float64)
        return lambda x: np.where(np.isnan(x), fill, x)
    if step.op in STATELESS:
        return lambda x: apply_stateless(step, x)
    shifts, spreads = zip(*(_affine(step, c) for c in names), strict=True)
    shift = np.array([np.nan if v is None else v for v in shifts], dtype=np.float64)
    spread = np.array(spreads, dtype=np.float64)
    return lambda x: (x - shift) / spread  # unfitted column: NaN


def _encode_into(block: np.ndarray, column: pa.ChunkedArray, name: str, steps: list[Step],
                 step: Step) -> None:
    """Write one encoded column into `block` (zeros already), as transform_frame would."""
    if is_numeric(column.type):
        x = _numeric_arrow(column, name, steps)
        if step.op == "one_hot":
            for k, value in enumerate(step.categories[name]):
                block[:, k] = x == value
        elif step.op == "ordinal":
            block[:, 0] = pd.Index(step.categories[name], dtype=object).get_indexer(
                x.astype(object))
        else:
            _hash_into(block, pa.array(x, from_pandas=True), step.buckets)
        return
    if not is_text(column.type):
        raise _NeedsPandas
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    for impute in steps:  # only imputation reaches a text column (plan_steps checks)
        value = impute.values[name]
        if not isinstance(value, str):
            raise _NeedsPandas
        column = pc.fill_null(column, pa.scalar(value, column.type))
    if step.op == "hash_bucket":
        _hash_into(block, column, step.buckets)
        return
    categories = step.categories[name]
    if not all(isinstance(v, str) for v in categories):
        raise _NeedsPandas
    codes = pc.index_in(column, value_set=pa.array(categories, column.type))
    codes = pc.fill_null(codes, -1).to_numpy(zero_copy_only=False)
    if step.op == "ordinal":
        block[:, 0] = codes
    else:
        block[:] = _indicators(codes, block.shape[1])


def _hash_into(block: np.ndarray, column: pa.ChunkedArray | pa.Array, buckets: int) -> None:
    """Hash each distinct value once (dictionary encoding), then index."""
    encoded = pc.dictionary_encode(column)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks() if encoded.num_chunks else pa.array(
            [], pa.dictionary(pa.int32(), column.type))
    table = np.array([bucket_of(v, buckets) for v in encoded.dictionary.to_pylist()] + [-1],
                     dtype=np.int64)
    index = pc.fill_null(encoded.indices, len(table) - 1).to_numpy(zero_copy_only=False)
    block[:] = _indicators(table[index], buckets)
