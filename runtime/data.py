"""Data stage: read the source, select columns, run the checks, split, fingerprint.

Pure functions over pandas (split, checks, fingerprint) are tested without Ray; reading parquet
and csv goes through Ray Data so that directories, globs and any pyarrow filesystem URI work.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from runtime.errors import DataCheckError, InputError
from runtime.spec import (
    Checks,
    CsvSource,
    Data,
    ParquetSource,
    SklearnSource,
    Split,
    SyntheticSource,
)

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Table:
    """The selected columns of a source, split three ways, with what later stages need to know."""

    splits: dict[str, pd.DataFrame]
    features: list[str]
    feature_types: dict[str, str]  # column -> "numeric" | "categorical"
    target: str
    classes: list | None  # sorted class labels for classification, None for regression
    fingerprint: str
    rows: int


def load_table(data: Data, task: str) -> Table:
    """Read, select, check and split the spec's data. Raises InputError / DataCheckError."""
    frame = read_source(data.source)
    frame, features = select_columns(frame, data)
    failures = run_checks(frame, data.checks)
    if failures:
        raise DataCheckError("data checks failed:\n" + "\n".join(f"  {f}" for f in failures))
    classes = None
    if task == "classification":
        classes = sorted(frame[data.target].unique().tolist())
        if len(classes) < 2:
            raise DataCheckError(f"data.target: '{data.target}' has a single class {classes}")
    elif not ptypes.is_numeric_dtype(frame[data.target]):
        raise InputError(f"data.target: regression needs a numeric target, "
                         f"'{data.target}' is {frame[data.target].dtype}")
    stratify = data.split.stratify if data.split.stratify is not None else task == "classification"
    splits = split_frame(frame, data.split, data.target if stratify else None)
    return Table(
        splits=splits,
        features=features,
        feature_types={c: column_type(frame[c]) for c in features},
        target=data.target,
        classes=classes,
        fingerprint=fingerprint(frame),
        rows=len(frame),
    )


def read_source(source) -> pd.DataFrame:
    if isinstance(source, SklearnSource):
        import sklearn.datasets

        return getattr(sklearn.datasets, f"load_{source.name}")(as_frame=True).frame
    if isinstance(source, SyntheticSource):
        return synthetic_frame(source)
    if isinstance(source, ParquetSource | CsvSource):
        return _read_with_ray(source)
    raise InputError(f"data.source: unsupported source {source!r}")


def _read_with_ray(source: ParquetSource | CsvSource) -> pd.DataFrame:
    import ray.data

    reader = ray.data.read_parquet if isinstance(source, ParquetSource) else ray.data.read_csv
    try:
        frame = reader(source.path).to_pandas()
    except FileNotFoundError as e:
        raise InputError(f"data.source.path: not found: {source.path}") from e
    except (ValueError, OSError) as e:
        raise InputError(f"data.source.path: cannot read {source.kind} at {source.path}: "
                         f"{str(e).splitlines()[0]}") from e
    if frame.empty:
        raise InputError(f"data.source.path: no rows in {source.path}")
    return frame


def synthetic_frame(source: SyntheticSource) -> pd.DataFrame:
    """Gaussian features and a target from a fixed random linear model (deterministic by seed)."""
    rng = np.random.default_rng(source.seed)
    x = rng.standard_normal((source.rows, source.features)).astype(np.float32)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(source.features)])
    if source.classes == 0:
        w = rng.standard_normal(source.features)
        frame["target"] = x @ w + 0.1 * rng.standard_normal(source.rows)
    else:
        w = rng.standard_normal((source.features, source.classes))
        logits = x @ w + 0.5 * rng.standard_normal((source.rows, source.classes))
        frame["target"] = logits.argmax(axis=1)
    return frame


def select_columns(frame: pd.DataFrame, data: Data) -> tuple[pd.DataFrame, list[str]]:
    columns = list(frame.columns)
    if data.target not in columns:
        raise InputError(f"data.target: no column '{data.target}' in the source "
                         f"(columns: {_preview(columns)})")
    if data.features == "all":
        features = [c for c in columns if c != data.target]
    else:
        missing = [c for c in data.features if c not in columns]
        if missing:
            raise InputError(f"data.features: no column {missing} in the source "
                             f"(columns: {_preview(columns)})")
        features = list(data.features)
    if not features:
        raise InputError("data.features: the source has no column besides the target")
    return frame[[*features, data.target]], features


def column_type(series: pd.Series) -> str:
    if ptypes.is_bool_dtype(series) or ptypes.is_numeric_dtype(series):
        return "numeric"
    return "categorical"


def run_checks(frame: pd.DataFrame, checks: Checks) -> list[str]:
    """Return one line per failed check, naming the check, the column and the numbers."""
    failures = []
    if len(frame) < checks.min_rows:
        failures.append(f"data.checks.min_rows: {len(frame)} rows, need >= {checks.min_rows}")
    if len(frame):
        null_fraction = frame.isna().mean()
        for column, fraction in null_fraction.items():
            if fraction > checks.max_null_fraction:
                failures.append(
                    f"data.checks.max_null_fraction: column '{column}' is {fraction:.1%} null, "
                    f"allowed {checks.max_null_fraction:.1%}"
                )
    return failures


def split_frame(frame: pd.DataFrame, split: Split,
                stratify_on: str | None) -> dict[str, pd.DataFrame]:
    """Seeded train/validation/test split; stratified on `stratify_on` when given."""
    from sklearn.model_selection import train_test_split

    def _cut(part: pd.DataFrame, size: float, seed: int):
        labels = part[stratify_on] if stratify_on else None
        try:
            return train_test_split(part, test_size=size, random_state=seed, stratify=labels)
        except ValueError as e:  # a class too small to stratify: say which
            raise DataCheckError(f"data.split: cannot stratify on '{stratify_on}': {e}") from e

    rest, test = _cut(frame, split.test, split.seed)
    if split.validation > 0:
        train, validation = _cut(rest, split.validation / (1 - split.test), split.seed + 1)
    else:
        train, validation = rest, rest.iloc[:0]
    return {"train": train, "validation": validation, "test": test}


def fingerprint(frame: pd.DataFrame) -> str:
    """Content hash of the selected data: same rows and columns give the same value."""
    digest = hashlib.sha256()
    digest.update(repr([(c, str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def _preview(columns: list[str], limit: int = 12) -> str:
    shown = ", ".join(map(str, columns[:limit]))
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > limit else "")
