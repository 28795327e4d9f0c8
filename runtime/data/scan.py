"""One pass over the data: checks, fingerprint, split sizes, classes and the training profile.

Every batch gives a partial summary (`scan_batch`) and the partials combine exactly
(`combine`), so the result does not depend on how Ray cut the data into blocks, nor on the order
they arrive in; the driver only ever holds the partials, never the rows. An in-memory frame
goes through the same two functions as a single batch.

Splits: a row's split comes from a hash of its content and the split seed (`assign_splits`), so
each split can be re-read lazily by any worker (`rows_of_split`) without a shuffle or an index.
Sources that fit in memory (scikit-learn sets) carry an exact, stratified split in the column
`SPLIT_COLUMN` instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from runtime.data.profile import merge_profiles, profile_partial
from runtime.errors import InputError
from runtime.spec import Checks, Split

SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
SPLIT_COLUMN = "__mlrt_split"
DROPPED = -1
SAMPLE_ROWS_PER_CHECK = 20
MAX_CLASSES = 1000
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # splitmix64 constants: spread hashes before cutting
_MIX = np.uint64(0xBF58476D1CE4E5B9)


@dataclass(frozen=True)
class ScanConfig:
    checks: Checks
    split: Split
    target: str
    features: tuple[str, ...]
    feature_types: dict[str, str]
    classification: bool
    # columns that are not model inputs, kept in the test split only (evaluate.slices): they
    # take no part in checks, hashes or splits, so naming them changes no split and no model
    keep: tuple[str, ...] = ()


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
class ScanPartial:
    """What one batch contributes to the scan; partials combine exactly (`combine`)."""

    rows: int
    nulls: dict[str, int]  # column -> null count
    dtype_failures: list[str]  # lines of failed dtype checks
    failing_rows: dict[str, int]  # row check -> rows failing it
    samples: dict[str, pd.DataFrame]  # row check -> up to SAMPLE_ROWS_PER_CHECK failing rows
    hash_sum: int  # sum of row hashes mod 2**64 (the order-independent fingerprint)
    dtypes: dict[str, str]  # column -> pandas dtype name
    split_rows: dict[str, int]
    dropped: int  # rows dropped by `on_fail: drop_rows`
    profile: dict  # runtime.data.profile partial of the training rows
    classes: set | None = None  # distinct targets (classification), at most MAX_CLASSES + 1


@dataclass(frozen=True)
class ScanResult:
    rows: int
    report: CheckReport
    fingerprint: str
    split_rows: dict[str, int]
    classes: list | None
    profile: dict


def to_frame(batch) -> pd.DataFrame:
    """Ray hands pandas batches with pyarrow-backed dtypes; a pyarrow batch converted here gives
    NumPy-backed columns, the same as an in-memory source (dtypes and hashes then agree)."""
    return batch if isinstance(batch, pd.DataFrame) else batch.to_pandas()


def row_hashes(frame: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    return pd.util.hash_pandas_object(frame[list(columns)], index=False).to_numpy(np.uint64)


def assign_splits(hashes: np.ndarray, split: Split) -> np.ndarray:
    """Split id per row from its content hash and the seed: stable, and independent of order."""
    with np.errstate(over="ignore"):
        mixed = (hashes ^ (np.uint64(split.seed) * _GOLDEN)) * _MIX
        mixed ^= mixed >> np.uint64(31)
    unit = (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    ids = np.full(len(hashes), SPLIT_IDS["train"], dtype=np.int8)
    ids[unit < split.test + split.validation] = SPLIT_IDS["validation"]
    ids[unit < split.test] = SPLIT_IDS["test"]
    return ids


def _split_and_drop(frame: pd.DataFrame, config: ScanConfig,
                    hashes: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    masks = _row_check_masks(frame, config.checks)
    if SPLIT_COLUMN in frame.columns:
        ids = frame[SPLIT_COLUMN].to_numpy(np.int8).copy()
    else:
        if hashes is None:
            hashes = row_hashes(frame, (*config.features, config.target))
        ids = assign_splits(hashes, config.split)
    if config.checks.on_fail == "drop_rows" and masks:
        ids[np.logical_or.reduce(list(masks.values()))] = DROPPED
    return ids, masks


def rows_of_split(batch, config: ScanConfig, split: str):
    """The rows of one split (failing rows dropped under `on_fail: drop_rows`), in the batch's
    own format; for `Dataset.map_batches(..., batch_format="pyarrow")`."""
    frame = to_frame(batch)
    ids, _ = _split_and_drop(frame, config)
    keep = ids == SPLIT_IDS[split]
    columns = [*config.features, config.target, *(config.keep if split == "test" else ())]
    if isinstance(batch, pd.DataFrame):
        return frame.loc[keep, columns].reset_index(drop=True)
    import pyarrow as pa

    return batch.select(columns).filter(pa.array(keep))


def scan_batch(batch, config: ScanConfig) -> ScanPartial:
    """The partial summary of one batch (see `combine`)."""
    frame = to_frame(batch)
    columns = (*config.features, config.target)
    hashes = row_hashes(frame, columns)
    ids, masks = _split_and_drop(frame, config, hashes)
    train = ids == SPLIT_IDS["train"]
    classes = None
    if config.classification:
        classes = set(pd.unique(frame[config.target].dropna())[: MAX_CLASSES + 1])
    return ScanPartial(
        rows=len(frame),
        nulls={c: int(frame[c].isna().sum()) for c in columns},
        dtype_failures=_dtype_failures(frame, config.checks),
        failing_rows={name: int(mask.sum()) for name, mask in masks.items()},
        samples={name: frame.loc[mask, list(columns)].head(SAMPLE_ROWS_PER_CHECK)
                 for name, mask in masks.items() if mask.any()},
        hash_sum=int(hashes.sum(dtype=np.uint64)),
        dtypes={c: str(frame[c].dtype) for c in columns},
        split_rows={name: int((ids == i).sum()) for name, i in SPLIT_IDS.items()},
        dropped=int((ids == DROPPED).sum()),
        profile=profile_partial(frame.loc[train], config.feature_types, hashes[train]),
        classes=classes,
    )


def scan_frame_batch(batch, config: ScanConfig) -> pd.DataFrame:
    """`scan_batch` shaped for `Dataset.map_batches`: one row holding the partial as a Python
    object (Ray Data carries object columns between its own workers)."""
    return pd.DataFrame({"partial": [scan_batch(batch, config)]})


def scan_dataset(ds, config: ScanConfig) -> ScanResult:
    rows = ds.map_batches(scan_frame_batch, batch_format="pyarrow",
                          fn_kwargs={"config": config}).take_all()
    return combine([r["partial"] for r in rows], config)


def combine(partials: list[ScanPartial], config: ScanConfig) -> ScanResult:
    checks = config.checks
    rows = sum(p.rows for p in partials)
    columns = (*config.features, config.target)
    report = CheckReport()
    for partial in partials:
        report.failures += [f for f in partial.dtype_failures if f not in report.failures]
    nulls = {c: sum(p.nulls[c] for p in partials) for c in columns}
    report.failures += _null_failures(nulls, rows, checks)
    report.failing_rows = {name: sum(p.failing_rows.get(name, 0) for p in partials)
                           for name in (partials[0].failing_rows if partials else {})}
    samples = {}
    for partial in partials:
        for name, frame in partial.samples.items():
            samples[name] = pd.concat([samples[name], frame]) if name in samples else frame
    if samples:
        report.sample = pd.concat([frame.head(SAMPLE_ROWS_PER_CHECK).assign(failed_check=name)
                                   for name, frame in samples.items()], ignore_index=True)
    report.dropped_rows = sum(p.dropped for p in partials)
    if checks.on_fail == "stop":
        report.failures += [_row_failure_line(name, report.failing_rows[name], samples[name],
                                              checks) for name in samples]
    kept = rows - report.dropped_rows
    if kept < checks.min_rows:
        dropped = f" after dropping {report.dropped_rows}" if report.dropped_rows else ""
        report.failures.append(f"data.checks.min_rows: {kept} rows{dropped}, "
                               f"need >= {checks.min_rows}")
    classes = None
    if config.classification:
        found = set().union(*(p.classes for p in partials)) if partials else set()
        if len(found) > MAX_CLASSES:
            raise InputError(f"data.target: '{config.target}' has more than {MAX_CLASSES} "
                             "distinct values; is this a regression target?")
        classes = sorted(v.item() if isinstance(v, np.generic) else v for v in found)
    split_rows = {name: sum(p.split_rows[name] for p in partials) for name in SPLIT_IDS}
    return ScanResult(rows=rows, report=report, fingerprint=_fingerprint(partials, rows),
                      split_rows=split_rows, classes=classes,
                      profile=merge_profiles([p.profile for p in partials]))


def _fingerprint(partials: list[ScanPartial], rows: int) -> str:
    """Content hash of the data: the sum of row hashes (order-independent) with the row count
    and column types. Same rows give the same value however they are split into files/blocks."""
    return _digest(sum(p.hash_sum for p in partials), partials[0].dtypes if partials else {},
                   rows)


def _digest(hash_sum: int, dtypes: dict[str, str], rows: int) -> str:
    total = hash_sum % (1 << 64)
    return hashlib.sha256(repr((sorted(dtypes.items()), rows, total)).encode()).hexdigest()[:16]


def check_frame(frame: pd.DataFrame, checks: Checks) -> tuple[pd.DataFrame, CheckReport]:
    """Run `data.checks` on an in-memory frame: (the frame without dropped rows, the report)."""
    unknown = [c for c in checks.columns if c not in frame.columns]
    if unknown:
        raise InputError(f"data.checks.columns: no column {unknown} in the data")
    config = ScanConfig(checks=checks, split=Split(), target=frame.columns[-1],
                        features=tuple(frame.columns[:-1]),
                        feature_types={c: column_type(frame[c]) for c in frame.columns[:-1]},
                        classification=False)
    frame = frame.assign(**{SPLIT_COLUMN: np.zeros(len(frame), dtype=np.int8)})
    report = combine([scan_batch(frame, config)], config).report
    ids, _ = _split_and_drop(frame, config)
    return frame.loc[ids != DROPPED].drop(columns=SPLIT_COLUMN), report


def column_type(series: pd.Series) -> str:
    if ptypes.is_bool_dtype(series) or ptypes.is_numeric_dtype(series):
        return "numeric"
    return "categorical"


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


def _null_failures(nulls: dict[str, int], rows: int, checks: Checks) -> list[str]:
    failures = []
    for column, count in nulls.items() if rows else ():
        fraction = count / rows
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


def _row_failure_line(name: str, count: int, sample: pd.DataFrame, checks: Checks) -> str:
    column, rule = name.split(".")[1:]
    check = checks.columns[column]
    examples = ", ".join(map(repr, sample[column].head(3).tolist()))
    what = {"min": f"below {check.min}", "max": f"above {check.max}",
            "allowed": f"not in {check.allowed}"}[rule]
    return (f"data.checks.{name}: {count} rows of '{column}' {what} "
            f"(e.g. {examples}); set on_fail: drop_rows to drop them")


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """`ScanResult.fingerprint` of an in-memory frame."""
    hashes = row_hashes(frame, tuple(frame.columns))
    return _digest(int(hashes.sum(dtype=np.uint64)),
                   {c: str(frame[c].dtype) for c in frame.columns}, len(frame))
