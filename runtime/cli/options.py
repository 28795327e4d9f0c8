"""What the commands share: the two consoles (stdout for results, stderr for progress) and
the arguments and options that several commands take."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


@functools.cache
def out() -> Console:
    """Results (tables, JSON) on stdout; piped or captured, not squeezed into 80 columns."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=200)


@functools.cache
def err() -> Console:
    """Progress, warnings and errors on stderr."""
    return Console(stderr=True, highlight=False)


def echo(line: str) -> None:
    """One progress line on stderr, as the stages print it (no rich markup)."""
    err().print(line, markup=False, soft_wrap=True)


SpecArg = Annotated[Path, typer.Argument(help="Job spec YAML file, e.g. jobs/digits.yaml.",
                                         show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a spec field: --set train.epochs=5 (repeatable; value is YAML).",
    show_default=False)]
StorageOpt = Annotated[str, typer.Option(
    help="The spec's storage folder holding the MLflow store (ignored when "
         "MLFLOW_TRACKING_URI is set).")]
AliasOpt = Annotated[str, typer.Option(help="Alias to move.")]
ActorOpt = Annotated[str | None, typer.Option(
    help="Who acts, for the audit trail (default: MLRT_ACTOR, else the OS user).",
    show_default=False)]
ReasonOpt = Annotated[str | None, typer.Option(
    help="Why, for the audit trail (required).", show_default=False)]


def require_reason(reason: str | None, action: str) -> str:
    """--reason is required for decisions (promote, rollback, approve, reject): exit 2
    before anything is read or written."""
    from runtime.errors import InputError

    if not (reason or "").strip():
        raise InputError(f"--reason: required to {action}: say why (it goes to the audit "
                         "trail)")
    return reason
