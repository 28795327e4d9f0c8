"""Capture and label files as the replicas write them (runtime/monitoring/layout.py), for
tests that need a window before (or without) a serving replica.

    ids = write_captures(storage, "m", "1", frame, predictions, start=now - timedelta(minutes=5))
    write_labels(storage, "m", ids[:100], frame["target"][:100])
"""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from runtime.monitoring.layout import captures_root, day_dir, file_name, labels_root

_SEQ = itertools.count()


def _write(root: str, table: pa.Table, first: datetime, writer: str) -> Path:
    folder = Path(day_dir(root, first))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(writer, int(first.timestamp() * 1e9), next(_SEQ))
    pq.write_table(table, path)
    return path


def write_captures(storage: str | Path, model: str, version: str, features: pd.DataFrame,
                   predictions, probabilities: np.ndarray | None = None, *,
                   start: datetime | None = None, spacing: timedelta = timedelta(seconds=0.1),
                   arm: str = "stable", alias: str = "champion", latency_ms=None,
                   request_ids: list[str] | None = None, writer: str = "test-replica",
                   rows_per_file: int = 500) -> list[str]:
    """Captured rows of `features` (one row per request) -> parquet files; their request ids."""
    n = len(features)
    start = start or datetime.now(UTC) - spacing * n
    ids = request_ids or [uuid.uuid4().hex for _ in range(n)]
    times = [start + spacing * i for i in range(n)]
    latency = np.full(n, 2.0) if latency_ms is None else np.asarray(latency_ms, np.float64)
    for lo in range(0, n, rows_per_file):
        hi = min(lo + rows_per_file, n)
        columns = {
            "request_id": pa.array(ids[lo:hi], pa.string()),
            "time": pa.array(times[lo:hi], pa.timestamp("us", "UTC")),
            "model": pa.array([model] * (hi - lo), pa.string()),
            "version": pa.array([str(version)] * (hi - lo), pa.string()),
            "alias": pa.array([alias] * (hi - lo), pa.string()),
            "arm": pa.array([arm] * (hi - lo), pa.string()),
            "prediction": pa.array([str(p) for p in list(predictions)[lo:hi]], pa.string()),
            "probabilities": pa.array(None if probabilities is None else
                                      [list(map(float, p)) for p in probabilities[lo:hi]],
                                      pa.list_(pa.float64()))
            if probabilities is not None else pa.nulls(hi - lo, pa.list_(pa.float64())),
            "latency_ms": pa.array(latency[lo:hi], pa.float64()),
        }
        for name in features.columns:
            values = features[name].iloc[lo:hi]
            columns[name] = (pa.array(values.astype(np.float64), pa.float64())
                             if pd.api.types.is_numeric_dtype(values)
                             else pa.array(values.astype(str), pa.string()))
        _write(captures_root(str(storage), model), pa.table(columns), times[lo], writer)
    return ids


def write_labels(storage: str | Path, model: str, request_ids, labels,
                 when: datetime | None = None) -> Path:
    when = when or datetime.now(UTC)
    labels = list(labels)
    numeric = all(isinstance(v, float) for v in labels)
    table = pa.table({
        "request_id": pa.array(list(request_ids), pa.string()),
        "label": pa.array(labels, pa.float64()) if numeric else
        pa.array([str(v) for v in labels], pa.string()),
        "time": pa.array([when] * len(labels), pa.timestamp("us", "UTC"))})
    return _write(labels_root(str(storage), model), table, when, "test-feedback")
