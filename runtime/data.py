"""Data stage: open the source, select columns, then one pass (runtime.scan) for the checks,
the fingerprint, split sizes, classes and the training profile.

File and synthetic sources stay in Ray Data: the driver holds summaries, never the rows, and
each split is re-read lazily by whoever consumes it. scikit-learn's bundled sets are small and
in memory, and get an exact stratified split (`split_frame`).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runtime.errors import DataCheckError, InputError
from runtime.scan import (
    SPLIT_COLUMN,
    SPLIT_IDS,
    CheckReport,
    ScanConfig,
    column_type,
    combine,
    rows_of_split,
    scan_batch,
    scan_dataset,
)
from runtime.spec import (
    Data,
    SklearnSource,
    Split,
    SyntheticSource,
)

SPLITS = ("train", "validation", "test")
@dataclass(frozen=True)
class Table:
    """The selected columns of a source, checked and split three ways, and what later stages
    need to know. The rows stay in Ray Data (`dataset(split)`, lazy) unless the source is an
    in-memory one (`frames`)."""

    features: list[str]
    feature_types: dict[str, str]  # column -> "numeric" | "categorical"
    target: str
    classes: list | None  # sorted class labels for classification, None for regression
    fingerprint: str
    rows: int
    split_rows: dict[str, int]
    checks: CheckReport
    profile: dict  # of the training split (runtime.profile)
    config: ScanConfig
    frames: dict[str, pd.DataFrame] | None = None  # in-memory sources only
    source: Any = None  # the lazy ray.data.Dataset of a streamed source

    def dataset(self, split: str):
        """The rows of one split as a lazy Ray Dataset (re-read from the source on each use)."""
        import ray.data

        if self.frames is not None:
            return ray.data.from_pandas(self.frames[split])
        return self.source.map_batches(rows_of_split, batch_format="pyarrow",
                                       fn_kwargs={"config": self.config, "split": split})


def load_table(data: Data, task: str) -> Table:
    """Read, select, check, split and profile the spec's data in one pass over the source.
    Raises InputError (bad columns) or DataCheckError (failed checks)."""
    classification = task == "classification"
    if isinstance(data.source, SklearnSource):
        frame = read_source(data.source)
        features = select_features(list(frame.columns), data)
        frame = frame[[*features, data.target]]
        types = {c: column_type(frame[c]) for c in frame.columns}
    else:
        ds = open_dataset(data.source)
        names = ds.schema().names
        features = select_features(list(names), data)
        ds = ds.select_columns([*features, data.target])
        types = _arrow_types(ds.schema())
    _check_target_and_checks(data, task, types, features)
    feature_types = {c: types[c] for c in features}
    config = ScanConfig(checks=data.checks, split=data.split, target=data.target,
                        features=tuple(features), feature_types=feature_types,
                        classification=classification)
    if isinstance(data.source, SklearnSource):
        stratify = data.split.stratify if data.split.stratify is not None else classification
        frame = frame.assign(**{SPLIT_COLUMN: split_ids(frame, data.split,
                                                        data.target if stratify else None)})
        result = combine([scan_batch(frame, config)], config)
    else:
        result = scan_dataset(ds, config)
    if result.report.failures:
        raise DataCheckError("data checks failed:\n"
                             + "\n".join(f"  {f}" for f in result.report.failures),
                             report=result.report)
    if classification and len(result.classes or []) < 2:
        raise DataCheckError(f"data.target: '{data.target}' has a single class {result.classes}")
    frames = ({name: rows_of_split(frame, config, name) for name in SPLITS}
              if isinstance(data.source, SklearnSource) else None)
    return Table(features=features, feature_types=feature_types, target=data.target,
                 classes=result.classes, fingerprint=result.fingerprint, rows=result.rows,
                 split_rows=result.split_rows, checks=result.report, profile=result.profile,
                 config=config, frames=frames,
                 source=None if frames is not None else ds)


def _check_target_and_checks(data: Data, task: str, types: dict[str, str],
                             features: list[str]) -> None:
    unknown = [c for c in data.checks.columns if c not in types]
    if unknown:
        raise InputError(f"data.checks.columns: no column {unknown} among the selected "
                         f"columns ({preview([*features, data.target])})")
    if task == "regression" and types[data.target] != "numeric":
        raise InputError(f"data.target: regression needs a numeric target, "
                         f"'{data.target}' is not numeric")


def _arrow_types(schema) -> dict[str, str]:
    return {name: "numeric" if arrow_numeric(kind) else "categorical"
            for name, kind in zip(schema.names, schema.types, strict=True)}


def arrow_numeric(dtype) -> bool:
    import pyarrow as pa

    return (pa.types.is_integer(dtype) or pa.types.is_floating(dtype)
            or pa.types.is_boolean(dtype) or pa.types.is_decimal(dtype))


def read_source(source: SklearnSource) -> pd.DataFrame:
    """An in-memory scikit-learn dataset, target column `target`."""
    import sklearn.datasets

    return getattr(sklearn.datasets, f"load_{source.name}")(as_frame=True).frame


def open_dataset(source):
    """A lazy Ray Dataset over a file source (directories, globs, pyarrow filesystem URIs) or
    the synthetic generator. Nothing is read beyond what the schema needs."""

    if isinstance(source, SyntheticSource):
        return synthetic_dataset(source)
    paths = expand_paths(source.path, "data.source.path")
    ds = read_files(paths, source.kind, "data.source.path")
    try:
        schema = ds.schema()
    except (ValueError, OSError) as e:
        raise InputError(f"data.source.path: cannot read {source.kind} at {source.path}: "
                         f"{str(e).splitlines()[0]}") from e
    if schema is None or not schema.names:
        raise InputError(f"data.source.path: no rows in {source.path}")
    return ds


def expand_paths(path: str, field: str) -> list[str]:
    """A file, directory or local glob as paths for Ray's readers (which do not expand globs);
    a URI (s3://, gs://, file://) is passed through for pyarrow to resolve."""
    if "://" in path:
        return [path]
    if glob.has_magic(path):
        paths = sorted(glob.glob(path))
        if not paths:
            raise InputError(f"{field}: no files match {path}")
        return paths
    if not Path(path).exists():
        raise InputError(f"{field}: not found: {path}")
    return [path]


def read_files(paths: list[str], fmt: str, field: str, text_columns: list[str] = ()):
    """A lazy Ray Dataset over parquet or csv files; csv reads `text_columns` as strings."""
    import pyarrow as pa
    import ray.data

    try:
        if fmt == "parquet":
            return ray.data.read_parquet(paths)
        from pyarrow import csv

        types = {c: pa.string() for c in text_columns}
        return ray.data.read_csv(paths, convert_options=csv.ConvertOptions(column_types=types))
    except FileNotFoundError as e:
        raise InputError(f"{field}: not found: {', '.join(paths)}") from e
    except (ValueError, OSError) as e:
        raise InputError(f"{field}: cannot read {fmt} at {', '.join(paths)}: "
                         f"{str(e).splitlines()[0]}") from e


SYNTHETIC_CHUNK_ROWS = 100_000


def synthetic_dataset(source: SyntheticSource, size: int | None = None):
    """Gaussian features and a target from a fixed random linear model, generated lazily in
    chunks of `size` rows by parallel Ray tasks. Chunk i draws from default_rng([seed, i]), so
    the rows depend on the seed only, never on the parallelism."""
    import ray.data

    size = size or SYNTHETIC_CHUNK_ROWS
    chunks = -(-source.rows // size)
    return ray.data.range(chunks, override_num_blocks=min(chunks, 1000)).map_batches(
        _synthetic_batch, batch_size=1, batch_format="pandas",
        fn_kwargs={"source": source, "size": size})


def _synthetic_batch(ids: pd.DataFrame, source: SyntheticSource, size: int) -> pd.DataFrame:
    return synthetic_chunk(source, int(ids["id"].iloc[0]), size)


def synthetic_chunk(source: SyntheticSource, index: int,
                    size: int = SYNTHETIC_CHUNK_ROWS) -> pd.DataFrame:
    start = index * size
    rows = min(size, source.rows - start)
    weights = np.random.default_rng(source.seed)  # the labelling model: same for every chunk
    rng = np.random.default_rng([source.seed, index])
    x = rng.standard_normal((rows, source.features)).astype(np.float32)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(source.features)])
    if source.classes == 0:
        w = weights.standard_normal(source.features)
        frame["target"] = x @ w + 0.1 * rng.standard_normal(rows)
    else:
        w = weights.standard_normal((source.features, source.classes))
        logits = x @ w + 0.5 * rng.standard_normal((rows, source.classes))
        frame["target"] = logits.argmax(axis=1)
    frame.index = pd.RangeIndex(start, start + rows)
    return frame


def select_features(columns: list[str], data: Data) -> list[str]:
    if data.target not in columns:
        raise InputError(f"data.target: no column '{data.target}' in the source "
                         f"(columns: {preview(columns)})")
    if data.features == "all":
        features = [c for c in columns if c != data.target]
    else:
        missing = [c for c in data.features if c not in columns]
        if missing:
            raise InputError(f"data.features: no column {missing} in the source "
                             f"(columns: {preview(columns)})")
        features = list(data.features)
    if not features:
        raise InputError("data.features: the source has no column besides the target")
    return features


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


def split_ids(frame: pd.DataFrame, split: Split, stratify_on: str | None) -> np.ndarray:
    """The exact (stratified) split of an in-memory frame as one split id per row."""
    parts = split_frame(frame, split, stratify_on)
    ids = pd.Series(SPLIT_IDS["train"], index=frame.index, dtype=np.int8)
    for name in ("validation", "test"):
        ids[parts[name].index] = SPLIT_IDS[name]
    return ids.to_numpy()


def preview(columns: list[str], limit: int = 12) -> str:
    shown = ", ".join(map(str, columns[:limit]))
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > limit else "")
