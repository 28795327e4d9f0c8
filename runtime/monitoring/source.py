"""Where a monitoring window comes from: its time bounds, the capture files that can hold it
and the labels that join it (runtime.monitoring.layout is the file contract).

    since, until = parse_window("10m", None)          # the last ten minutes
    files = capture_files(storage, model, since, until)
    labels = read_labels(storage, model, since, extra="late.csv")

Files are listed through pyarrow filesystems, so `storage` may be a local path or a URI
(s3://...). Only the `date=` folders the window spans are listed; the time filter itself runs
in the Ray Data pass (runtime.monitoring.blocks), on each block.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from runtime.data.fs import open_uri
from runtime.errors import InputError
from runtime.monitoring.layout import captures_root, day_dir, labels_root

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
DEFAULT_SINCE = "24h"


def parse_time(text: str, option: str, now: datetime) -> datetime:
    """`10m`, `2h`, `7d` (before `now`) or an ISO time (no zone: UTC) -> an aware datetime."""
    text = text.strip()
    match = _DURATION.match(text)
    if match:
        return now - timedelta(**{_UNITS[match[2]]: float(match[1])})
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{option}: expected a duration (30s, 10m, 2h, 7d, 1w) or an ISO time "
                         f"(2026-12-01T10:00:00Z), got '{text}'") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_window(since: str | None, until: str | None,
                 now: datetime | None = None) -> tuple[datetime, datetime]:
    now = now or datetime.now(UTC)
    start = parse_time(since or DEFAULT_SINCE, "--since", now)
    end = parse_time(until, "--until", now) if until else now
    if start >= end:
        raise InputError(f"--since: {start.isoformat()} is not before --until "
                         f"{end.isoformat()}")
    return start, end


def _days(start: datetime, end: datetime) -> list[datetime]:
    day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    while day <= end:
        days.append(day)
        day += timedelta(days=1)
    return days


def _list_days(root: str, start: datetime, end: datetime) -> tuple[pafs.FileSystem, list[str]]:
    fs, base = open_uri(root)
    files: list[str] = []
    for day in _days(start, end):
        folder = day_dir(base, day)
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        # a writer's temporary file is hidden (leading dot) until its rename completes it
        files += sorted(i.path for i in infos if i.type == pafs.FileType.File
                        and i.path.endswith(".parquet") and not Path(i.path).name.startswith("."))
    return fs, files


def capture_files(storage: str, model: str, start: datetime,
                  end: datetime) -> tuple[pafs.FileSystem, list[str]]:
    """Capture files of the days the window spans (a file may hold rows outside it)."""
    return _list_days(captures_root(storage, model), start, end)


def read_labels(storage: str, model: str, start: datetime, extra: str | None = None,
                now: datetime | None = None) -> dict[str, object]:
    """request_id -> label: the stored labels that arrived since the window began (a label
    comes after its request), then `extra` (--labels csv/parquet), which wins. Several labels
    for one request: the last by `time` wins. Held in memory: one id and label per labeled
    request, not the window's rows."""
    now = now or datetime.now(UTC)
    fs, files = _list_days(labels_root(storage, model), start, now)
    tables = [_label_table(pq.read_table(f, filesystem=fs), f) for f in files]
    labels: dict[str, object] = {}
    if tables:
        table = pa.concat_tables(tables, promote_options="permissive")
        if "time" in table.column_names:
            table = table.take(pc.sort_indices(table, [("time", "ascending")]))
        labels.update(zip(table["request_id"].to_pylist(), table["label"].to_pylist(),
                          strict=True))
    if extra is not None:
        table = _label_table(_read_label_file(extra), extra)
        labels.update(zip(table["request_id"].to_pylist(), table["label"].to_pylist(),
                          strict=True))
    labels.pop(None, None)
    return labels


def _read_label_file(path: str) -> pa.Table:
    from pyarrow import csv

    if "://" not in path and not Path(path).is_file():
        raise InputError(f"--labels: {path} does not exist")
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InputError(f"--labels: {path}: expected a .csv or .parquet file")
    try:
        if suffix == ".csv":
            # ids and labels stay text: "007" is an id, not the number 7
            return csv.read_csv(path, convert_options=csv.ConvertOptions(
                column_types={"request_id": pa.string(), "label": pa.string()}))
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"--labels: {path} could not be read: {e}") from None


def _label_table(table: pa.Table, source: str) -> pa.Table:
    missing = [c for c in ("request_id", "label") if c not in table.column_names]
    if missing:
        raise InputError(f"--labels: {source} has no column {', '.join(missing)} (needs "
                         "request_id and label)")
    columns = ["request_id", "label"] + (["time"] if "time" in table.column_names else [])
    table = table.select(columns)
    return table.set_column(0, "request_id", pc.cast(table["request_id"], pa.string()))
