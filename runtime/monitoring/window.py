"""A window's mergeable summary: per-block partials counted on the reference profile's bins.

`window_partial(batch, reference)` runs on one block (a Ray Data batch: dict of numpy arrays,
pandas DataFrame or pyarrow Table); `merge_window(partials)` adds partials up on the driver.
The bins and categories come from the reference profile, so a partial is a few dozen numbers
per feature whatever the block size, is plain JSON, and merging is exact addition whatever the
block cut (mean and m2 up to float rounding). Layout, per feature:

    numeric:     {"n", "nulls", "absent", "counts": [per reference bin], "mean", "m2",
                  "below", "above"}          (below/above: outside the training min..max)
    categorical: {"n", "nulls", "absent", "counts": {category: n}, "other",
                  "other_values": {hash: example}}   (the OTHER_VALUES smallest hashes: KMV)

`nulls` are missing, unparsable or non-finite values; `absent` counts rows of blocks that lack
the column (e.g. excluded from capture). Categories are compared as strings with integral
floats written as integers, so 3, 3.0 and "3" are one category on both sides.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from runtime.data.profile import bin_counts

OTHER_VALUES = 64  # distinct values outside the reference kept per feature (as a KMV sketch)
_EXAMPLE_CHARS = 60
_INTEGRAL = re.compile(r"^(-?\d+)\.0+$")


def reference_bins(entry: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(inner cut points, reference counts) of a numeric feature's bins, or None when training
    had no values. Profiles from before `quantile_bins` have only the equal-width histogram:
    its inner edges with both end bins opened to infinity hold the same reference counts."""
    if "quantile_bins" in entry:
        bins = entry["quantile_bins"]
        return np.asarray(bins["edges"], np.float64), np.asarray(bins["counts"], np.float64)
    if "histogram" in entry:
        hist = entry["histogram"]
        return (np.asarray(hist["edges"], np.float64)[1:-1],
                np.asarray(hist["counts"], np.float64))
    return None


def category_key(value: Any) -> str:
    text = str(value)
    match = _INTEGRAL.match(text)
    return match.group(1) if match else text


def reference_categories(entry: dict) -> dict[str, float]:
    """Reference count per listed category (keys normalised like the window's)."""
    counts: dict[str, float] = {}
    for key, count in entry.get("frequencies", {}).items():
        counts[category_key(key)] = counts.get(category_key(key), 0) + count
    return counts


def window_partial(batch: Any, reference: dict) -> dict:
    """The partial summary of one block against the reference profile's features."""
    rows = _row_count(batch)
    partial: dict = {"rows": rows, "numeric": {}, "categorical": {}}
    for name, entry in reference["features"].items():
        column = _column(batch, name)
        if entry["type"] == "numeric":
            partial["numeric"][name] = _numeric_partial(column, rows, entry)
        else:
            partial["categorical"][name] = _categorical_partial(column, rows, entry)
    return partial


def partial_row(batch: Any, reference: dict,
                prediction_reference: dict | None = None) -> dict[str, np.ndarray]:
    """`window_partial` as a one-row batch, the shape Ray Data's map_batches must return:

        rows = ds.map_batches(partial_row, fn_kwargs={"reference": profile}, batch_format="pyarrow")
        summary = merge_window([json.loads(r["partial"]) for r in rows.iter_rows()])

    With `prediction_reference`, column "prediction_partial" holds the partial of the batch's
    `prediction` column, so features and predictions take the same single pass."""
    row = {"partial": np.array([json.dumps(window_partial(batch, reference))], dtype=object)}
    if prediction_reference is not None:
        row["prediction_partial"] = np.array(
            [json.dumps(window_partial(batch, prediction_reference))], dtype=object)
    return row


def _row_count(batch: Any) -> int:
    if isinstance(batch, pa.Table | pd.DataFrame):
        return len(batch)
    if isinstance(batch, dict):
        return len(next(iter(batch.values()))) if batch else 0
    raise TypeError(f"a window block must be a dict of arrays, a pandas DataFrame or a pyarrow "
                    f"Table, got {type(batch).__name__}")


def _column(batch: Any, name: str) -> np.ndarray | pa.ChunkedArray | None:
    if isinstance(batch, pa.Table):
        return batch.column(name) if name in batch.column_names else None
    return np.asarray(batch[name]) if name in batch else None


def _numeric_partial(column: np.ndarray | None, rows: int, entry: dict) -> dict:
    bins = reference_bins(entry)
    edges = bins[0] if bins else np.empty(0)
    part = {"n": 0, "nulls": 0, "absent": 0, "counts": [0] * (len(edges) + 1),
            "mean": 0.0, "m2": 0.0, "below": 0, "above": 0}
    if column is None:
        part["absent"] = rows
        return part
    values = _as_float(column.to_numpy() if isinstance(column, pa.ChunkedArray) else column)
    finite_mask = np.isfinite(values)
    finite = values if finite_mask.all() else values[finite_mask]
    part["n"], part["nulls"] = len(finite), len(values) - len(finite)
    if len(finite):
        mean = float(finite.mean())
        part["counts"] = bin_counts(edges, finite).tolist()
        deviations = finite - mean
        part["mean"], part["m2"] = mean, float(np.dot(deviations, deviations))
        if entry.get("min") is not None:
            part["below"] = int(np.count_nonzero(finite < entry["min"]))
            part["above"] = int(np.count_nonzero(finite > entry["max"]))
    return part


def _as_float(column: np.ndarray) -> np.ndarray:
    if column.dtype.kind in "fiub":
        return column.astype(np.float64, copy=False)
    # strings or objects: what does not parse as a number is counted with the nulls
    return pd.to_numeric(pd.Series(column), errors="coerce").to_numpy(np.float64, na_value=np.nan)


def _categorical_partial(column: np.ndarray | None, rows: int, entry: dict) -> dict:
    known = reference_categories(entry)
    part: dict = {"n": 0, "nulls": 0, "absent": 0, "counts": {}, "other": 0, "other_values": {}}
    if column is None:
        part["absent"] = rows
        return part
    values, counts = _value_counts(column)
    part["n"] = int(counts.sum())
    part["nulls"] = len(column) - part["n"]
    others: list[str] = []
    for value, count in zip(values, counts, strict=True):
        key = category_key(value)
        if key in known:
            part["counts"][key] = part["counts"].get(key, 0) + int(count)
        else:
            part["other"] += int(count)
            others.append(key)
    part["other_values"] = _smallest_hashes({_hash(k): k[:_EXAMPLE_CHARS] for k in others})
    return part


def _value_counts(column: np.ndarray | pa.ChunkedArray) -> tuple[list, np.ndarray]:
    """Distinct non-null values and their counts; arrow columns are counted in arrow (no
    Python object per row)."""
    if isinstance(column, pa.ChunkedArray):
        counted = pc.value_counts(column)
        values, counts = counted.field("values").to_pylist(), counted.field("counts").to_numpy()
        keep = [v is not None and v == v for v in values]  # v != v: NaN, a null as in pandas
        return [v for v, k in zip(values, keep, strict=True) if k], counts[np.asarray(keep, bool)]
    counted = pd.Series(column).value_counts(dropna=True)
    return list(counted.index), counted.to_numpy()


def _hash(key: str) -> str:
    # fixed-width hex: string order is numeric order, so the sketch can be kept as JSON keys
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def _smallest_hashes(values: dict[str, str]) -> dict[str, str]:
    """K minimum values: the smallest hashes of a set are the smallest of the union of any
    split's smallest, so the sketch merges exactly and estimates the distinct count."""
    return dict(sorted(values.items())[:OTHER_VALUES])


def merge_window(partials: list[dict]) -> dict:
    """Add up partials (or already merged summaries): the window's summary."""
    summary: dict = {"rows": sum(p["rows"] for p in partials), "numeric": {}, "categorical": {}}
    if not partials:
        return summary
    for name in partials[0]["numeric"]:
        summary["numeric"][name] = _merge_numeric([p["numeric"][name] for p in partials])
    for name in partials[0]["categorical"]:
        summary["categorical"][name] = _merge_categorical([p["categorical"][name]
                                                           for p in partials])
    return summary


def _merge_numeric(parts: list[dict]) -> dict:
    merged = {"n": 0, "nulls": 0, "absent": 0, "counts": [0] * len(parts[0]["counts"]),
              "mean": 0.0, "m2": 0.0, "below": 0, "above": 0}
    for part in parts:
        for key in ("nulls", "absent", "below", "above"):
            merged[key] += part[key]
        merged["counts"] = [a + b for a, b in zip(merged["counts"], part["counts"], strict=True)]
        if not part["n"]:
            continue
        total = merged["n"] + part["n"]  # Chan et al.: exact up to float rounding
        delta = part["mean"] - merged["mean"]
        merged["mean"] += delta * part["n"] / total
        merged["m2"] += part["m2"] + delta**2 * merged["n"] * part["n"] / total
        merged["n"] = total
    return merged


def _merge_categorical(parts: list[dict]) -> dict:
    merged: dict = {"n": 0, "nulls": 0, "absent": 0, "counts": {}, "other": 0,
                    "other_values": {}}
    for part in parts:
        for key in ("n", "nulls", "absent", "other"):
            merged[key] += part[key]
        for category, count in part["counts"].items():
            merged["counts"][category] = merged["counts"].get(category, 0) + count
        merged["other_values"].update(part["other_values"])
    merged["other_values"] = _smallest_hashes(merged["other_values"])
    return merged


def distinct_estimate(sketch: dict[str, str]) -> int:
    """Distinct values behind a KMV sketch: exact below OTHER_VALUES, else (k - 1) / h_k."""
    if len(sketch) < OTHER_VALUES:
        return len(sketch)
    largest = int(max(sketch), 16) / 2.0**64
    return round((OTHER_VALUES - 1) / largest)
