"""Exceptions mlrt raises on purpose, each with the exit code the CLI maps it to.

0 ok; 1 the job ran and failed (data check, gate, training error); 2 bad input (spec, arguments,
missing files or columns). The CLI maps them in one place (`runtime.cli.main`).
"""

from __future__ import annotations


class MlrtError(Exception):
    """Base of the errors mlrt reports to the user without a traceback."""

    exit_code = 1


class InputError(MlrtError):
    """The user asked for something that cannot work: bad spec, missing file, unknown column."""

    exit_code = 2


class DataCheckError(MlrtError):
    """The data loaded but failed the spec's `data.checks`; `report` says what failed."""

    def __init__(self, message: str, report: object = None):
        super().__init__(message)
        self.report = report


class GateFailed(MlrtError):
    """The model trained but did not pass `evaluate.gate`; the alias was not moved."""

    def __init__(self, message: str, summary: object = None):
        super().__init__(message)
        self.summary = summary


class TrainingError(MlrtError):
    """Training failed after its retries (`train.max_failures`)."""


class UnsafeModelError(MlrtError):
    """A model file holds a type mlrt will not load (it could run code)."""


class RegistryError(InputError):
    """A model, version or alias that the registry does not have."""


class AuditError(MlrtError):
    """The audit trail could not be written or read; the action it would record was not done
    (or, for `mlrt audit --verify`, the trail is broken)."""
