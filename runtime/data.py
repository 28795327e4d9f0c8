"""Data stage: read the source, select columns, run the checks, split, fingerprint.

Pure functions over pandas (split, checks, fingerprint) are tested without Ray; reading parquet
and csv goes through Ray Data so that directories, globs and any pyarrow filesystem URI work.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

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
SAMPLE_ROWS_PER_CHECK = 20


@dataclass
class CheckReport:
    """What the checks found: blocking failures, failing-row counts per row check, a sample."""

    failures: list[str] = field(default_factory=list)  # lines that stop the run
    failing_rows: dict[str, int] = field(default_factory=dict)  # row check -> rows failing it
    dropped_rows: int = 0
    sample: pd.DataFrame | None = None  # failing rows (<= 20 per check), column `failed_check`

    def as_dict(self) -> dict:
        return {"failures": self.failures, "failing_rows": self.failing_rows,
                "dropped_rows": self.dropped_rows}



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
    checks: CheckReport = field(default_factory=CheckReport)


def load_table(data: Data, task: str) -> Table:
    """Read, select, check and split the spec's data. Raises InputError / DataCheckError."""
    frame = read_source(data.source)
    frame, features = select_columns(frame, data)
    frame, report = check_frame(frame, data.checks)
    if report.failures:
        raise DataCheckError("data checks failed:\n" + "\n".join(f"  {f}" for f in report.failures),
                             report=report)
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
        checks=report,
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
        frame = _to_pandas(reader(source.path))
    except FileNotFoundError as e:
        raise InputError(f"data.source.path: not found: {source.path}") from e
    except (ValueError, OSError) as e:
        raise InputError(f"data.source.path: cannot read {source.kind} at {source.path}: "
                         f"{str(e).splitlines()[0]}") from e
    if frame.empty:
        raise InputError(f"data.source.path: no rows in {source.path}")
    return frame


SYNTHETIC_CHUNK_ROWS = 100_000


def _to_pandas(ds) -> pd.DataFrame:
    """Materialize a dataset as a NumPy-backed frame: Ray's `to_pandas` gives pyarrow-backed
    dtypes under pandas 3, which would make the same data look different (dtypes are part of
    the fingerprint) depending on the source."""
    import pyarrow as pa
    import ray

    tables = ray.get(ds.to_arrow_refs())
    return pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame()


def synthetic_frame(source: SyntheticSource) -> pd.DataFrame:
    """Gaussian features and a target from a fixed random linear model. Generated in chunks of
    SYNTHETIC_CHUNK_ROWS in parallel Ray tasks when the data is large; chunk i draws from
    default_rng([seed, i]), so the rows depend on the seed only, never on the parallelism."""
    size = SYNTHETIC_CHUNK_ROWS
    chunks = -(-source.rows // size)
    if chunks == 1:
        return synthetic_chunk(source, 0, size)
    import ray.data

    ds = ray.data.range(chunks, override_num_blocks=chunks).map_batches(
        lambda ids: synthetic_chunk(source, int(ids["id"][0]), size), batch_size=1,
        batch_format="pandas")
    return _to_pandas(ds)


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


def check_frame(frame: pd.DataFrame, checks: Checks) -> tuple[pd.DataFrame, CheckReport]:
    """Run `data.checks`; return the frame (failing rows dropped with `on_fail: drop_rows`) and
    the report. Dtype, null-fraction and min_rows failures always stop; range and
    allowed-value failures stop unless `on_fail: drop_rows`."""
    unknown = [c for c in checks.columns if c not in frame.columns]
    if unknown:
        raise InputError(f"data.checks.columns: no column {unknown} in the data "
                         f"(columns: {_preview(list(frame.columns))})")
    report = CheckReport()
    report.failures += _dtype_failures(frame, checks)
    report.failures += _null_failures(frame, checks)
    masks = _row_check_masks(frame, checks)
    report.failing_rows = {name: int(mask.sum()) for name, mask in masks.items()}
    failing = {name: mask for name, mask in masks.items() if mask.any()}
    if failing:
        report.sample = pd.concat(
            [frame[mask].head(SAMPLE_ROWS_PER_CHECK).assign(failed_check=name)
             for name, mask in failing.items()])
        if checks.on_fail == "drop_rows":
            keep = ~np.logical_or.reduce(list(failing.values()))
            report.dropped_rows = int((~keep).sum())
            frame = frame[keep]
        else:
            report.failures += [_row_failure_line(frame, name, mask, checks)
                                for name, mask in failing.items()]
    if len(frame) < checks.min_rows:
        dropped = f" after dropping {report.dropped_rows}" if report.dropped_rows else ""
        report.failures.append(f"data.checks.min_rows: {len(frame)} rows{dropped}, "
                               f"need >= {checks.min_rows}")
    return frame, report


def run_checks(frame: pd.DataFrame, checks: Checks) -> list[str]:
    """Return one line per failed check, naming the check, the column and the numbers."""
    return check_frame(frame, checks)[1].failures


def _dtype_failures(frame: pd.DataFrame, checks: Checks) -> list[str]:
    failures = []
    for column, check in checks.columns.items():
        if check.dtype is None:
            continue
        series = frame[column]
        if check.dtype == "categorical":
            ok = column_type(series) == "categorical"
        elif check.dtype == "integer":
            values = series.dropna()
            ok = ptypes.is_integer_dtype(series) or (
                ptypes.is_float_dtype(series) and bool((values == values.round()).all()))
        else:
            ok = column_type(series) == "numeric"
        if not ok:
            failures.append(f"data.checks.columns.{column}.dtype: column '{column}' is "
                            f"{series.dtype}, expected {check.dtype}")
    return failures


def _null_failures(frame: pd.DataFrame, checks: Checks) -> list[str]:
    failures = []
    if not len(frame):
        return failures
    for column, fraction in frame.isna().mean().items():
        column_check = checks.columns.get(column)
        if column_check is not None and column_check.max_null_fraction is not None:
            limit, where = column_check.max_null_fraction, f"columns.{column}.max_null_fraction"
        else:
            limit, where = checks.max_null_fraction, "max_null_fraction"
        if fraction > limit:
            failures.append(f"data.checks.{where}: column '{column}' is {fraction:.1%} null, "
                            f"allowed {limit:.1%}")
    return failures


def _row_check_masks(frame: pd.DataFrame, checks: Checks) -> dict[str, np.ndarray]:
    """One boolean mask of failing rows per row-level check (nulls never fail these: the null
    checks cover them)."""
    masks = {}
    for column, check in checks.columns.items():
        series = frame[column]
        if check.min is not None or check.max is not None:
            values = pd.to_numeric(series, errors="coerce")
            if check.min is not None:
                masks[f"columns.{column}.min"] = (values < check.min).to_numpy()
            if check.max is not None:
                masks[f"columns.{column}.max"] = (values > check.max).to_numpy()
        if check.allowed is not None:
            masks[f"columns.{column}.allowed"] = (
                series.notna() & ~series.isin(check.allowed)).to_numpy()
    return masks


def _row_failure_line(frame: pd.DataFrame, name: str, mask: np.ndarray, checks: Checks) -> str:
    column, rule = name.split(".")[1:]
    check = checks.columns[column]
    examples = ", ".join(map(repr, frame.loc[mask, column].head(3).tolist()))
    what = {"min": f"below {check.min}", "max": f"above {check.max}",
            "allowed": f"not in {check.allowed}"}[rule]
    return (f"data.checks.{name}: {int(mask.sum())} rows of '{column}' {what} "
            f"(e.g. {examples}); set on_fail: drop_rows to drop them")


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
