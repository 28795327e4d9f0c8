"""The labeled captured rows a `retrain.data: source+captures` retrain appends to the source:
captures joined with labels by request_id (runtime.monitoring.layout), as the source's
feature and target columns.

Every labeled capture stored so far is used (each retrain starts again from the source, so no
row is counted twice); the last label of a request by `time` wins, as in `mlrt monitor`. The
rows are read into the driver: one row per labeled request, small next to a source that stays
in Ray Data. A hashed feature cannot be trained on, an excluded one is absent: either refuses
the retrain (InputError naming the columns).
"""

from __future__ import annotations

import pandas as pd

from runtime.errors import InputError
from runtime.monitoring.layout import CAPTURE_META, HASH_PREFIX, captures_root, labels_root


def _read(root: str, columns: list[str] | None = None) -> pd.DataFrame | None:
    """The parquet files under `root` (any pyarrow filesystem), or None when there are none."""
    import pyarrow.dataset as pads
    from pyarrow.fs import FileSelector, FileSystem, FileType, LocalFileSystem

    if "://" in root:
        fs, path = FileSystem.from_uri(root)
    else:
        from pathlib import Path

        fs, path = LocalFileSystem(), str(Path(root).absolute())
    if fs.get_file_info(path).type != FileType.Directory:
        return None
    files = [i.path for i in fs.get_file_info(FileSelector(path, recursive=True))
             if i.type == FileType.File and i.base_name.endswith(".parquet")]
    if not files:
        return None
    dataset = pads.dataset(files, filesystem=fs, format="parquet")
    names = dataset.schema.names
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise InputError(f"monitor.retrain.data: the captured rows under {root} lack "
                             f"{missing} (excluded in serve.capture?): they cannot be appended "
                             "to the source")
    return dataset.to_table(columns=columns).to_pandas()


def labeled_captures(storage: str, model: str, target: str) -> pd.DataFrame | None:
    """Captured rows that have a label: the features as captured and the label as `target`
    (text for classification; load_table picks the source's columns and casts them to the
    source's types, naming any that are missing)."""
    labels = _read(labels_root(storage, model), ["request_id", "label", "time"])
    if labels is None or labels.empty:
        return None
    rows = _read(captures_root(storage, model))
    if rows is None or rows.empty:
        return None
    features = [c for c in rows.columns if c not in CAPTURE_META and c != "date"]
    last = labels.sort_values("time").drop_duplicates("request_id", keep="last")
    joined = rows.drop_duplicates("request_id").merge(last[["request_id", "label"]],
                                                      on="request_id", how="inner")
    hashed = [c for c in features if joined[c].dtype == object and
              joined[c].astype(str).str.startswith(HASH_PREFIX).any()]
    if hashed:
        raise InputError(f"monitor.retrain.data: {hashed} are captured hashed (serve.capture."
                         "hash): a model cannot be trained on them; use data: source")
    return joined[features].assign(**{target: joined["label"]})
