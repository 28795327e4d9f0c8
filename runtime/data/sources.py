"""Data sources as lazy Ray Datasets: parquet and csv files (directories, globs, pyarrow
filesystem URIs), the parallel synthetic generator, and scikit-learn's bundled sets (in memory).

Nothing is read beyond what the schema needs: the rows stay in Ray Data and are streamed by
whoever consumes them (the one-pass scan, preprocessing, training workers).
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pandas as pd

from runtime.errors import InputError
from runtime.spec import SklearnSource, SyntheticSource


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


def read_small(source, below: int):
    """A file source smaller than `below` bytes on disk as one Arrow table read right here
    (pyarrow, milliseconds; a first Ray Data read costs seconds of executor and worker
    start-up), else None. The files Ray's readers would read: directories walked, hidden
    files skipped, parquet by extension. Hive-partitioned paths (`key=value/`) are left to Ray,
    whose partition columns this does not reproduce."""
    import pyarrow as pa
    from pyarrow import csv, parquet
    from pyarrow.fs import FileSelector, FileType, LocalFileSystem

    from runtime.data.fs import ray_paths

    paths, filesystem = ray_paths(expand_paths(source.path, "data.source.path"))
    filesystem = filesystem or LocalFileSystem()
    files = []
    for info in filesystem.get_file_info(paths):
        if info.type != FileType.Directory:
            files.append(info)
            continue
        for f in filesystem.get_file_info(FileSelector(info.path, recursive=True)):
            parts = f.path[len(info.path):].strip("/").split("/")
            if f.type != FileType.File or any(p.startswith((".", "_")) for p in parts):
                continue
            if "=" in "/".join(parts[:-1]):
                return None
            if source.kind == "parquet" and not f.path.endswith(".parquet"):
                continue
            files.append(f)
    if not files or any(f.type == FileType.NotFound for f in files) \
            or sum(f.size or 0 for f in files) >= below:
        return None  # Ray's reader reports what is missing
    read = parquet.read_table if source.kind == "parquet" else csv.read_csv
    try:
        tables = []
        for f in sorted(files, key=lambda f: f.path):
            with filesystem.open_input_file(f.path) as handle:
                tables.append(read(handle))
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowException, ValueError, OSError) as e:
        raise InputError(f"data.source.path: cannot read {source.kind} at {source.path}: "
                         f"{str(e).splitlines()[0]}") from e


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

    from runtime.data.fs import ray_paths

    try:
        paths, filesystem = ray_paths(paths)  # s3:// at AWS_ENDPOINT_URL when it is set
        if fmt == "parquet":
            return ray.data.read_parquet(paths, filesystem=filesystem)
        from pyarrow import csv

        types = {c: pa.string() for c in text_columns}
        return ray.data.read_csv(paths, filesystem=filesystem,
                                 convert_options=csv.ConvertOptions(column_types=types))
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
