"""Batch inference: a registered model over a parquet or csv dataset, with Ray Data.

    mlrt predict models:/digits-mlp@champion --input rows.parquet --output predictions.parquet
    mlrt predict models:/breast-cancer-hgb/2 --input 'data/*.csv' --output out --actors 4 \
        --batch-size 8192 --keep id --address auto

The model's files (safetensors / skops / JSON, as registered) are fetched once by the driver and
shipped to a fixed pool of Ray actors (`map_batches` with `ActorPoolStrategy`), each of which
loads the model once and applies the model's own preprocessing (`runtime.features`) to every
batch. The output is a parquet dataset (a directory of files) with the kept input columns
(all by default), `prediction`, and `probability_<class>` for classifiers.

Bad input fails with exit 2 before anything is written: the input schema is checked against the
model's features and their types up front, and every batch is checked again (a csv file later in
a glob may disagree with the first one). The output is written to a hidden temp directory next
to `--output` and renamed into place only when every row is written, so a failure mid-run never
leaves partial output behind. `--output` is a local path (or a shared mount the Ray nodes see).
"""

from __future__ import annotations

import functools
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.data.arrow import dictionary_columns, is_numeric, is_text
from runtime.data.sources import expand_paths, read_files
from runtime.data.table import preview
from runtime.errors import InputError
from runtime.features.apply import transform_matrix
from runtime.inference.predictor import Predictor
from runtime.inference.uri_output import check_uri_output, write_uri
from runtime.registry.model_dir import ModelFiles, fetch_model

FORMATS = ("parquet", "csv")
DEFAULT_BATCH_SIZE = 16384  # rows per model call and per output block: fewer, larger Ray tasks
DEFAULT_ACTORS = 2
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
_REMOTE_INPUT_ERROR = re.compile(r"^runtime\.errors\.InputError: (.+)$", re.M)
# Ray Data warns when a fixed pool gets fewer input blocks than actors (a small input): harmless.
_POOL_WARNING = "The minimum number of concurrent actors"


@dataclass(frozen=True)
class BatchResult:
    model: str  # name/version
    rows: int
    seconds: float
    output: Path | str  # a local folder, or a URI (s3://...)
    files: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def resolve_input(path: str, fmt: str | None = None) -> tuple[list[str], str]:
    """The input's paths (local globs expanded) and its format: `fmt`, or from the suffix."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"--format: expected one of {', '.join(FORMATS)}, got '{fmt}'")
    if "://" in path:  # a pyarrow filesystem URI: Ray Data resolves it
        return [path], fmt or _format_of([path], path)
    paths = expand_paths(path, "--input")
    if fmt is None:
        files = [str(f) for p in paths for f in (sorted(Path(p).rglob("*")) if Path(p).is_dir()
                                                  else [Path(p)]) if not f.name.startswith(".")]
        fmt = _format_of(files, path)
    return paths, fmt


def _format_of(files: list[str], given: str) -> str:
    formats = {_SUFFIXES[s] for f in files if (s := Path(f).suffix.lower()) in _SUFFIXES}
    if len(formats) != 1:
        found = sorted(formats) or "no .parquet or .csv files"
        raise InputError(f"--input: cannot tell the format of {given} ({found}); "
                         f"pass --format parquet or --format csv")
    return formats.pop()


def read_input(paths: list[str], fmt: str, feature_types: dict[str, str]):
    """A lazy Ray dataset over the input. csv reads categorical features as text (so a zip code
    stays a category, as at training time) and infers the rest."""
    return read_files(paths, fmt, "--input",
                      [c for c, t in feature_types.items() if t == "categorical"])


def _schema(ds, given: str):
    """The input's schema (parquet: from file metadata; csv: from the first file)."""
    try:
        schema = _run_unwrapped(ds.schema)
    except (ValueError, OSError) as e:
        raise InputError(f"--input: cannot read {given}: {str(e).splitlines()[0]}") from e
    if schema is None or not schema.names:
        raise InputError(f"--input: no columns or rows in {given}")
    return schema


def check_schema(schema, feature_types: dict[str, str], keep: list[str] | None,
                 outputs: list[str]) -> None:
    """Check an input's schema against the model before anything runs: every feature present,
    numeric features numeric, categorical ones text; --keep columns present; no output clash."""
    check_feature_types(schema, feature_types)
    _check_columns(list(schema.names), keep, outputs)


def check_feature_types(schema, feature_types: dict[str, str]) -> None:
    """`schema`: a pyarrow or Ray Data schema (names and Arrow types)."""
    import pyarrow as pa

    types = dict(zip(schema.names, schema.types, strict=True))
    missing = [c for c in feature_types if c not in types]
    if missing:
        raise InputError(f"--input: missing feature columns {missing} (the model needs "
                         f"{preview(list(feature_types))}; the input has "
                         f"{preview(list(schema.names))})")
    for column, kind in feature_types.items():
        dtype = types[column]
        if pa.types.is_null(dtype):
            continue
        ok = is_numeric(dtype) if kind == "numeric" else is_text(dtype)
        if not ok:
            raise InputError(f"--input: column '{column}' has type {dtype}, but the model's "
                             f"feature '{column}' is {_expected(kind)}")


def _check_block(block, feature_types: dict[str, str]):
    """Every block is checked too, as it is read: the schema checked up front comes from the
    first file only (csv), and a later file may disagree with it."""
    check_feature_types(block.schema, feature_types)
    return block


def _expected(kind: str) -> str:
    return "numeric" if kind == "numeric" else "categorical (text)"


def _check_columns(names: list[str], keep: list[str] | None, outputs: list[str]) -> None:
    if keep is not None:
        unknown = [c for c in keep if c not in names]
        if unknown:
            raise InputError(f"--keep: no column {unknown} in the input "
                             f"(columns: {preview(names)})")
    clash = [c for c in (names if keep is None else keep) if c in outputs]
    if clash:
        raise InputError(f"--input: columns {clash} would be overwritten by the model's output; "
                         f"rename them or leave them out with --keep")


class BatchPredictor:
    """The Ray Data actor: loads the model once, then predicts batch after batch."""

    def __init__(self, files: dict[str, bytes], keep: list[str] | None = None):
        self.predictor = Predictor.from_files(files)
        self.keep = keep

    def __call__(self, batch):
        """Arrow in, Arrow out: the model matrix comes straight from the Arrow buffers
        (transform_matrix) and the kept input columns pass through untouched."""
        import pyarrow as pa

        x = transform_matrix(self.predictor.state, batch)
        out = batch if self.keep is None else batch.select(self.keep)
        predicted = self.predictor.output_columns(*self.predictor.predict_matrix(x))
        for name, values in predicted.items():
            out = out.append_column(name, pa.array(values))
        return out


def predict_dataset(ds, model: ModelFiles, batch_size: int, actors: int,
                    keep: list[str] | None = None):
    """The lazy prediction pipeline: each block's types checked as it is read, blocks cut to
    `batch_size` rows (so one big file still feeds every actor), then a fixed pool of `actors`
    model-loading actors."""
    import ray.data

    checked = ds.map_batches(_check_block, fn_kwargs={"feature_types": model.feature_types},
                             batch_size=None, batch_format="pyarrow",
                             udf_modifying_row_count=False)
    # strict: Ray fuses a non-strict repartition into the map before it, and then the model
    # actors get whole input blocks (one actor busy for a one-file input)
    rebatched = checked.repartition(target_num_rows_per_block=batch_size, strict=True)
    return rebatched.map_batches(
        BatchPredictor,
        fn_constructor_kwargs={"files": model.files, "keep": keep},
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=batch_size,
        batch_format="pyarrow",
        udf_modifying_row_count=False,
    )


def write_atomic(ds, output: Path, write: Callable[..., None],
                 overwrite: bool = False) -> tuple[int, int]:
    """Execute `ds` into `output` (parquet files, by `write(ds, path)`) via a temp dir renamed
    at the end; a failure removes the temp dir, leaving `output` as it was. Returns (rows,
    files)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.mlrt-tmp-{uuid.uuid4().hex[:8]}"
    old = output.parent / f".{output.name}.mlrt-old-{uuid.uuid4().hex[:8]}"
    try:
        write(ds, str(tmp))
        rows, files = _count_rows(tmp)
        if output.exists() and overwrite:
            output.rename(old)
        tmp.rename(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not output.exists():
            old.rename(output)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return rows, files


def _write_parquet(ds, path: str, filesystem=None, dictionary: list[str] | None = None) -> None:
    """`dictionary`: the only columns parquet dictionary-encodes (None: pyarrow's default,
    every column); runtime.data.arrow.dictionary_columns says why."""
    options = {} if dictionary is None else {"use_dictionary": dictionary}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_POOL_WARNING, category=UserWarning)
        _run_unwrapped(lambda: ds.write_parquet(path, filesystem=filesystem, **options))


def _run_unwrapped(action: Callable[[], Any]) -> Any:
    """Run a Ray Data action; an InputError raised in an actor (a bad batch) comes back
    wrapped in Ray's task errors: re-raise it as itself, so the CLI exits 2 with its message."""
    try:
        return action()
    except InputError:
        raise
    except Exception as e:
        cause = _input_error_in(e)
        if cause is None:
            raise
        raise InputError(str(cause)) from e


def _input_error_in(error: BaseException) -> InputError | None:
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, InputError):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    # Ray Data wraps a UDF's exception in UserCodeException and keeps the original only as
    # text in the remote traceback: take the message of the last InputError it shows.
    found = _REMOTE_INPUT_ERROR.findall(str(error))
    return InputError(found[-1]) if found else None


def _count_rows(directory: Path) -> tuple[int, int]:
    import pyarrow.parquet as pq

    files = sorted(directory.rglob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files), len(files)


def parse_keep(keep: str) -> list[str] | None:
    """`--keep`: 'all' (default), 'none', or a comma-separated list of input columns."""
    if keep == "all":
        return None
    if keep == "none":
        return []
    columns = [c.strip() for c in keep.split(",") if c.strip()]
    if not columns:
        raise InputError(f"--keep: expected all, none or column names, got '{keep}'")
    return columns


def check_output(output: str, overwrite: bool) -> Path | str:
    """The output folder, checked: a URI (s3://) stays a string (see uri_output)."""
    if "://" in output:
        check_uri_output(output, overwrite)
        return output
    path = Path(output)
    if path.exists() and not overwrite:
        raise InputError(f"--output: {output} exists; pass --overwrite or choose another path")
    return path


def run_batch(model_uri: str, input_path: str, output: str, *, fmt: str | None = None,
              storage: str = ".mlrt", address: str | None = None,
              batch_size: int = DEFAULT_BATCH_SIZE, actors: int = DEFAULT_ACTORS,
              keep: str = "all", overwrite: bool = False,
              echo: Callable[[str], None] = print) -> BatchResult:
    """The `mlrt predict` command: check everything, predict, write. Ray is started (or
    joined) here if it is not running yet; the caller shuts it down."""
    from runtime.cluster.connect import init_ray
    from runtime.registry import tracking

    if batch_size < 1 or actors < 1:
        raise InputError(f"--batch-size and --actors must be >= 1, got {batch_size} and {actors}")
    keep_columns = parse_keep(keep)
    target = check_output(output, overwrite)
    paths, fmt = resolve_input(input_path, fmt)  # before Ray or MLflow: the cheap checks
    tracking.use_store(storage)
    model = fetch_model(model_uri)
    echo(f"[model] {model.name} v{model.version}: {len(model.feature_types)} features")
    echo(f"[ray] {init_ray(address)}")
    ds = read_input(paths, fmt, model.feature_types)
    schema = _schema(ds, input_path)
    check_schema(schema, model.feature_types, keep_columns, model.output_columns())
    # the kept text columns and a predicted class repeat; probabilities and regression
    # predictions do not
    label = ["prediction"] if model.meta.classes else []
    dictionary = [c for c in dictionary_columns(schema, label)
                  if keep_columns is None or c in keep_columns or c in label]
    write = functools.partial(_write_parquet, dictionary=dictionary)
    start = time.perf_counter()
    predictions = predict_dataset(ds, model, batch_size, actors, keep_columns)
    if isinstance(target, str):
        rows, files = write_uri(predictions, target, overwrite, write)
    else:
        rows, files = write_atomic(predictions, target, write, overwrite)
    return BatchResult(model=f"{model.name}/{model.version}", rows=rows,
                       seconds=time.perf_counter() - start, output=target, files=files)
