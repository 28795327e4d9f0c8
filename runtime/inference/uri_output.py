"""Batch predictions written to a URI (s3://...): object stores have no rename, so the
local temp-dir-then-rename of `write_atomic` becomes: write under a temp prefix next to the
output, then copy each file into place and drop the temp prefix. A failure while writing
leaves the output untouched; `_SUCCESS` is written last, so a reader can tell a complete
output from one interrupted while copying.
"""

from __future__ import annotations

import contextlib
import uuid

from runtime.data.fs import open_uri
from runtime.errors import InputError

SUCCESS = "_SUCCESS"


def check_uri_output(uri: str, overwrite: bool) -> None:
    from pyarrow import fs

    filesystem, path = open_uri(uri)
    try:
        info = filesystem.get_file_info(path)
        exists = info.type != fs.FileType.NotFound or bool(filesystem.get_file_info(
            fs.FileSelector(path, allow_not_found=True)))
    except OSError as e:
        raise InputError(f"--output: cannot reach {uri}: {str(e).splitlines()[0]}") from e
    if exists and not overwrite:
        raise InputError(f"--output: {uri} exists; pass --overwrite or choose another path")


def write_uri(ds, uri: str, overwrite: bool, write) -> tuple[int, int]:
    """`write(ds, tmp_path, filesystem)` runs the dataset into a temp prefix; then the files
    move under `uri`. Returns (rows, files)."""
    import pyarrow.parquet as pq
    from pyarrow import fs

    filesystem, path = open_uri(uri)
    tmp = f"{path.rstrip('/')}.mlrt-tmp-{uuid.uuid4().hex[:8]}"
    try:
        write(ds, tmp, filesystem)
        written = [i for i in filesystem.get_file_info(fs.FileSelector(tmp, recursive=True))
                   if i.type == fs.FileType.File and i.path.endswith(".parquet")]
        rows = sum(pq.ParquetFile(i.path, filesystem=filesystem).metadata.num_rows
                   for i in written)
        if overwrite:
            filesystem.delete_dir_contents(path, missing_dir_ok=True)
        for info in written:
            filesystem.copy_file(info.path, f"{path}/{info.path[len(tmp) + 1:]}")
        with filesystem.open_output_stream(f"{path}/{SUCCESS}") as marker:
            marker.write(f"{rows} rows in {len(written)} files\n".encode())
    finally:  # the temp prefix goes either way; it may not exist if the write failed early
        with contextlib.suppress(OSError):
            filesystem.delete_dir(tmp)
    return rows, len(written)
