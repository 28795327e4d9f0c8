"""The `mlrt` command line (typer): `main` is the console script's entry point."""

from runtime.cli.main import main

__all__ = ["main"]
