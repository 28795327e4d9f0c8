"""The `evaluate:` and `register:` sections, and the metrics each task knows."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from runtime.spec.base import Section

CLASSIFICATION_METRICS = ("accuracy", "f1_macro", "precision", "recall", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")


def task_metrics(task: str) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS



class Gate(Section):
    metric: str
    min: float | None = Field(None, description="lower bound (upper bound for rmse/mae)")
    beat_champion: bool = False
    max_slice_gap: float | None = Field(
        None, ge=0, description="fail when the worst slice of evaluate.slices is more than this "
                                "below the overall metric (above it for rmse, mae, log_loss)")


class Evaluate(Section):
    metrics: list[str] | None = Field(None, description="default: every metric of the task")
    gate: Gate | None = None
    slices: list[str] = Field(
        [], description="columns: every metric per value of each, on the test split; a column "
                        "need not be a model input (e.g. a protected attribute)")
    min_slice_rows: int = Field(30, ge=1, description="slices with fewer test rows are reported, "
                                                      "not gated")

    @field_validator("slices")
    @classmethod
    def _slices_unique(cls, v: list[str]) -> list[str]:
        dupes = sorted({c for c in v if v.count(c) > 1})
        if dupes:
            raise ValueError(f"columns listed twice: {dupes}")
        if any(not c for c in v):
            raise ValueError("a slice column needs a name")
        return v


# The alias a passing gate moves under `register.approval: manual`, until someone approves.
CANDIDATE_ALIAS = "candidate"


class Register(Section):
    alias: str = Field("champion", pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$", max_length=255)
    approval: Literal["auto", "manual"] = Field(
        "auto", description="manual: a passing gate moves @candidate; `mlrt models approve` "
                            "moves the serving alias")

    @field_validator("alias")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v.lower() == "latest" or re.fullmatch(r"[vV]\d+", v):
            raise ValueError(f"'{v}' is reserved by MLflow; pick another alias")
        if v == CANDIDATE_ALIAS:
            raise ValueError(f"'{v}' is the alias of versions waiting for approval "
                             "(register.approval: manual); pick another")
        return v
