"""`mlrt predict`: batch inference of a registered model over a dataset, on Ray Data."""

from __future__ import annotations

from typing import Annotated

import typer

from runtime.cli.options import StorageOpt, echo, out


def predict(
    model_uri: Annotated[str, typer.Argument(
        help="models:/NAME@ALIAS or models:/NAME/VERSION.", show_default=False)],
    input_path: Annotated[str, typer.Option(
        "--input", help="Parquet or csv file, directory, glob or pyarrow URI.",
        show_default=False)],
    output: Annotated[str, typer.Option(
        help="Directory of parquet files to write (created atomically).", show_default=False)],
    fmt: Annotated[str | None, typer.Option(
        "--format", help="parquet or csv (default: from the input's suffix).",
        show_default=False)] = None,
    keep: Annotated[str, typer.Option(
        help="Input columns to keep next to the predictions: all, none, or a,b,c.")] = "all",
    batch_size: Annotated[int, typer.Option(
        help="Rows per model call (and per output file).")] = 16384,
    actors: Annotated[int, typer.Option(help="Model actors in the pool.")] = 2,
    overwrite: Annotated[bool, typer.Option(help="Replace --output if it exists.")] = False,
    storage: StorageOpt = ".mlrt",
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join. Default: a local Ray, or RAY_ADDRESS when set.",
        show_default=False)] = None,
) -> None:
    """Batch inference: run a registered model (with its preprocessing) over a dataset.

    Writes parquet with the kept input columns, `prediction` and `probability_<class>`.
    Bad input (missing or wrong-typed feature columns) exits 2 before anything is written.
    """
    from runtime.cluster.connect import shutdown_ray
    from runtime.inference.batch import run_batch

    try:
        result = run_batch(model_uri, input_path, output, fmt=fmt, storage=storage,
                           address=address, batch_size=batch_size, actors=actors, keep=keep,
                           overwrite=overwrite,
                           echo=echo)
    finally:
        shutdown_ray()
    files = f"{result.files} file" + ("s" if result.files != 1 else "")
    out().print(f"{result.model}: {result.rows} rows -> {result.output} ({files}) "
              f"in {result.seconds:.1f}s, {result.rows_per_s:,.0f} rows/s")
