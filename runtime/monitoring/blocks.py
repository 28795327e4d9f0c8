"""The one Ray Data pass of `mlrt monitor`: each block of captured rows -> one small partial
(per served version: the drift partial on that version's profile bins, the prediction partial,
and per canary arm the quality, coverage and latency partials, also per time bucket), merged
on the driver by addition. The window's rows never reach the driver.

    rows = ds.map_batches(block_partial, fn_kwargs={"context": context}, batch_format="pyarrow")
    merged = merge_blocks([json.loads(r["partial"]) for r in rows.iter_rows()], task)

`context`: {"start_us", "end_us", "buckets", "task", "labels": {request_id: label},
"versions": {version: {"profile", "prediction_profile", "classes"}}}. Rows of a version the
registry does not know are counted (`unknown_rows`) and otherwise left out.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from runtime.monitoring.quality import (
    empty_quality,
    latency_partial,
    merge_latency,
    merge_quality,
    quality_partial,
)
from runtime.monitoring.window import merge_window, window_partial


def block_partial(batch: pa.Table, context: dict) -> dict[str, np.ndarray]:
    """map_batches form: a one-row batch holding the block's partial as JSON."""
    return {"partial": np.array([json.dumps(summarize_block(batch, context))], dtype=object)}


def summarize_block(batch: pa.Table, context: dict) -> dict:
    times = pc.cast(pc.cast(batch["time"], pa.timestamp("us", "UTC")), pa.int64())
    inside = pc.and_(pc.greater_equal(times, context["start_us"]),
                     pc.less(times, context["end_us"]))
    batch = batch.filter(pc.fill_null(inside, False))
    out: dict = {"rows": batch.num_rows, "unknown_rows": 0, "versions": {}}
    if not batch.num_rows:
        return out
    versions = pc.cast(batch["version"], pa.string())
    for version in pc.unique(versions).to_pylist():
        rows = batch.filter(pc.equal(versions, version))
        info = context["versions"].get(version)
        if info is None:
            out["unknown_rows"] += rows.num_rows
            continue
        out["versions"][version] = _version_partial(rows, info, context)
    return out


def _version_partial(rows: pa.Table, info: dict, context: dict) -> dict:
    part: dict = {"rows": rows.num_rows, "drift": window_partial(rows, info["profile"]),
                  "prediction": None, "arms": {}, "buckets": {}}
    if info.get("prediction_profile") is not None:
        part["prediction"] = window_partial(rows, info["prediction_profile"])
    ids = rows["request_id"].to_pylist()
    labels = [context["labels"].get(i) for i in ids]
    arms = (rows["arm"].to_pylist() if "arm" in rows.column_names
            else ["stable"] * rows.num_rows)
    latency = (rows["latency_ms"].to_numpy(zero_copy_only=False).astype(np.float64)
               if "latency_ms" in rows.column_names else np.full(rows.num_rows, np.nan))
    times = pc.cast(pc.cast(rows["time"], pa.timestamp("us", "UTC")), pa.int64()).to_numpy()
    span = max(context["end_us"] - context["start_us"], 1)
    buckets = np.minimum((times - context["start_us"]) * context["buckets"] // span,
                         context["buckets"] - 1)
    groups = {("arm", a): np.flatnonzero(np.array(arms, dtype=object) == a) for a in set(arms)}
    groups.update({("bucket", int(b)): np.flatnonzero(buckets == b) for b in np.unique(buckets)})
    for (kind, key), index in groups.items():
        summary = {"rows": len(index), "latency": latency_partial(latency[index]),
                   "quality": _quality(rows, index, labels, info, context["task"])}
        part["arms" if kind == "arm" else "buckets"][str(key)] = summary
    return part


def _quality(rows: pa.Table, index: np.ndarray, labels: list, info: dict, task: str) -> dict:
    labeled = [int(i) for i in index if labels[i] is not None]
    if not labeled:
        return empty_quality(task)
    picked = rows.take(pa.array(labeled, pa.int64()))
    predictions = picked["prediction"].to_pylist()
    probabilities = (picked["probabilities"].to_pylist()
                     if "probabilities" in picked.column_names else None)
    return quality_partial(task, [labels[i] for i in labeled], predictions, probabilities,
                           info.get("classes"))


def merge_blocks(parts: list[dict], task: str) -> dict:
    """Add up block partials: per version, the merged drift and prediction summaries and the
    merged quality/latency per arm and per time bucket."""
    merged: dict = {"rows": sum(p["rows"] for p in parts),
                    "unknown_rows": sum(p["unknown_rows"] for p in parts), "versions": {}}
    by_version: dict[str, list[dict]] = {}
    for part in parts:
        for version, vpart in part["versions"].items():
            by_version.setdefault(version, []).append(vpart)
    for version, vparts in by_version.items():
        predictions = [p["prediction"] for p in vparts if p["prediction"] is not None]
        merged["versions"][version] = {
            "rows": sum(p["rows"] for p in vparts),
            "drift": merge_window([p["drift"] for p in vparts]),
            "prediction": merge_window(predictions) if predictions else None,
            "arms": _merge_groups([p["arms"] for p in vparts], task),
            "buckets": _merge_groups([p["buckets"] for p in vparts], task),
        }
    return merged


def _merge_groups(groups: list[dict], task: str) -> dict:
    keys = sorted({k for g in groups for k in g}, key=lambda k: (not k.isdigit(), k.zfill(9)))
    out = {}
    for key in keys:
        items = [g[key] for g in groups if key in g]
        out[key] = {"rows": sum(i["rows"] for i in items),
                    "latency": merge_latency([i["latency"] for i in items]),
                    "quality": merge_quality([i["quality"] for i in items], task)}
    return out
