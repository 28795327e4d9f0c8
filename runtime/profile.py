"""Data profile of the training split: the reference a served model's inputs are compared with
(drift detection). Pure pandas/numpy; stored as `profile.json` with every model version.

Per numeric feature: count, nulls, mean, std, min, max, quantiles and a histogram; per
categorical feature: count, nulls, distinct values and the most frequent ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 20
TOP_CATEGORIES = 50


def profile_frame(frame: pd.DataFrame, feature_types: dict[str, str]) -> dict:
    return {
        "rows": len(frame),
        "features": {column: (_numeric(frame[column]) if kind == "numeric"
                              else _categorical(frame[column]))
                     for column, kind in feature_types.items()},
    }


def _numeric(series: pd.Series) -> dict:
    values = pd.to_numeric(series, errors="coerce").dropna().to_numpy(dtype=np.float64)
    entry: dict = {"type": "numeric", "count": len(values), "nulls": int(series.isna().sum())}
    if not len(values):
        return entry
    counts, edges = np.histogram(values, bins=HISTOGRAM_BINS)
    entry.update({
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "quantiles": {f"p{round(q * 100):02d}": float(v)
                      for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True)},
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    })
    return entry


def _categorical(series: pd.Series) -> dict:
    counts = series.value_counts(dropna=True)
    return {
        "type": "categorical",
        "count": int(counts.sum()),
        "nulls": int(series.isna().sum()),
        "distinct": len(counts),
        "frequencies": {str(k): int(v) for k, v in counts.head(TOP_CATEGORIES).items()},
    }
