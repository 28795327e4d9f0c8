"""Data stage: open the source, select columns, then one pass (runtime.data.scan) for the checks,
the fingerprint, split sizes, classes and the training profile.

File and synthetic sources stay in Ray Data: the driver holds summaries, never the rows, and
each split is re-read lazily by whoever consumes it. scikit-learn's bundled sets are small and
in memory, and get an exact stratified split (`split_frame`). Files smaller than
IN_MEMORY_BELOW_BYTES on disk are read once into the driver instead: the same scan, split and
fingerprint, but every later stage uses the rows in memory rather than starting a Ray Data
pipeline that costs more than the work (a 1,000-row CSV: ~7 s of a ~20 s job).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from runtime.data.arrow import feature_kinds
from runtime.data.scan import (
    SPLIT_COLUMN,
    SPLIT_IDS,
    CheckReport,
    ScanConfig,
    column_type,
    combine,
    rows_of_split,
    scan_batch,
    scan_dataset,
    to_frame,
)
from runtime.data.sources import open_dataset, read_small, read_source
from runtime.errors import DataCheckError, InputError
from runtime.spec import Data, SklearnSource, Split, SyntheticSource

SPLITS = ("train", "validation", "test")
# a first job on a user's own CSV; far below what one driver holds comfortably
IN_MEMORY_BELOW_BYTES = 32 * 1024**2
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
    profile: dict  # of the training split (runtime.data.profile)
    config: ScanConfig
    frames: dict[str, pd.DataFrame] | None = None  # in-memory sources only
    source: Any = None  # the lazy ray.data.Dataset of a streamed source

    def rows_of(self, split: str):
        """The rows of one split: the frame when they are in memory, else `dataset(split)`."""
        return self.frames[split] if self.frames is not None else self.dataset(split)

    def dataset(self, split: str):
        """The rows of one split as a lazy Ray Dataset (re-read from the source on each use)."""
        import ray.data

        if self.frames is not None:
            return ray.data.from_pandas(self.frames[split])
        return self.source.map_batches(rows_of_split, batch_format="pyarrow",
                                       fn_kwargs={"config": self.config, "split": split})


def load_table(data: Data, task: str, slices: tuple[str, ...] | list[str] = (),
               extra: pd.DataFrame | None = None) -> Table:
    """Read, select, check, split and profile the spec's data in one pass over the source.
    `slices` (evaluate.slices) that are not features stay in the test split, not as inputs.
    `extra` rows (the watcher's labeled captured rows) are appended to the source before the
    pass, so they go through the same checks, fingerprint and split.
    Raises InputError (bad columns) or DataCheckError (failed checks)."""
    classification = task == "classification"
    if isinstance(data.source, SklearnSource):
        frame = read_source(data.source)
        features = select_features(list(frame.columns), data)
        keep = _kept_columns(list(frame.columns), features, data.target, slices)
        frame = frame[[*features, data.target, *keep]]
        if extra is not None and len(extra):
            frame = pd.concat([frame, _like(extra, frame.dtypes.to_dict())], ignore_index=True)
        types = {c: column_type(frame[c]) for c in frame.columns}
    elif (small := None if isinstance(data.source, SyntheticSource)
          else read_small(data.source, IN_MEMORY_BELOW_BYTES)) is not None:
        features = select_features(small.column_names, data)
        keep = _kept_columns(small.column_names, features, data.target, slices)
        small = small.select([*features, data.target, *keep])
        if extra is not None and len(extra):
            import pyarrow as pa

            small = pa.concat_tables([small, _arrow_table_like(extra, small.schema)])
        types = feature_kinds(small.schema)
        frame = to_frame(small)
    else:
        ds = open_dataset(data.source)
        names = ds.schema().names
        features = select_features(list(names), data)
        keep = _kept_columns(list(names), features, data.target, slices)
        ds = ds.select_columns([*features, data.target, *keep])
        if extra is not None and len(extra):
            import ray.data

            ds = ds.union(ray.data.from_arrow(_arrow_table_like(extra, ds.schema())))
        types = feature_kinds(ds.schema())
        frame = None
    _check_target_and_checks(data, task, types, features)
    feature_types = {c: types[c] for c in features}
    config = ScanConfig(checks=data.checks, split=data.split, target=data.target,
                        features=tuple(features), feature_types=feature_types,
                        classification=classification, keep=tuple(keep))
    if isinstance(data.source, SklearnSource):
        stratify = data.split.stratify if data.split.stratify is not None else classification
        frame = frame.assign(**{SPLIT_COLUMN: split_ids(frame, data.split,
                                                        data.target if stratify else None)})
        result = combine([scan_batch(frame, config)], config)
    elif frame is not None:
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
              if frame is not None else None)
    return Table(features=features, feature_types=feature_types, target=data.target,
                 classes=result.classes, fingerprint=result.fingerprint, rows=result.rows,
                 split_rows=result.split_rows, checks=result.report, profile=result.profile,
                 config=config, frames=frames, source=ds if frames is None else None)


def _like(extra: pd.DataFrame, dtypes: dict) -> pd.DataFrame:
    """`extra` with the source's columns and dtypes; InputError naming what does not fit."""
    missing = [c for c in dtypes if c not in extra.columns]
    if missing:
        raise InputError(f"monitor.retrain.data: the captured rows lack {missing} (excluded "
                         "or hashed in serve.capture?): they cannot be appended to the source")
    out = {}
    for column, dtype in dtypes.items():
        try:
            out[column] = extra[column].astype(dtype)
        except (TypeError, ValueError) as e:
            raise InputError(f"monitor.retrain.data: captured column '{column}' does not fit "
                             f"the source's type {dtype}: {e}") from e
    return pd.DataFrame(out)


def _arrow_table_like(extra: pd.DataFrame, schema):
    """The rows as an Arrow table with the source's schema, to append to it."""
    import pyarrow as pa

    arrow = schema.base_schema if hasattr(schema, "base_schema") else schema
    frame = _like(extra, {name: arrow.field(name).type.to_pandas_dtype()
                          for name in arrow.names})
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False).cast(arrow)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as e:
        raise InputError(f"monitor.retrain.data: the captured rows do not fit the source's "
                         f"schema: {e}") from e
    return table


def _check_target_and_checks(data: Data, task: str, types: dict[str, str],
                             features: list[str]) -> None:
    unknown = [c for c in data.checks.columns if c not in types]
    if unknown:
        raise InputError(f"data.checks.columns: no column {unknown} among the selected "
                         f"columns ({preview([*features, data.target])})")
    if task == "regression" and types[data.target] != "numeric":
        raise InputError(f"data.target: regression needs a numeric target, "
                         f"'{data.target}' is not numeric")


def _kept_columns(columns: list[str], features: list[str], target: str,
                  slices: tuple[str, ...] | list[str]) -> list[str]:
    """The slice columns that are neither features nor the target (kept for evaluation)."""
    missing = [c for c in slices if c not in columns]
    if missing:
        raise InputError(f"evaluate.slices: no column {missing} in the source "
                         f"(columns: {preview(columns)})")
    return [c for c in slices if c not in features and c != target]


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
