"""The optional `monitor:` section: how `mlrt monitor` and the watcher judge served traffic,
and what `mlrt watch` does about it.

    monitor:
      interval: 10m                     # one watch cycle = one monitoring window
      drift: {...}                      # runtime.monitoring.settings.DriftSettings
      triggers:
        drift: {min_windows: 3}         # retrain after drift in N consecutive windows
        quality: {metric: accuracy, below: 0.9, min_labels: 200}
        schedule: "0 3 * * 0"           # cron (UTC), optional
      retrain: {data: source, cooldown: 6h, max_per_day: 2}
      rollout: {canary_weight: 0.1, min_labeled: 200, max_quality_drop: 0.0}

The drift settings live in runtime.monitoring.settings (pydantic only, no runtime imports).
The section changes nothing that is trained, so it is not in spec_hash.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from runtime.monitoring.settings import DriftSettings
from runtime.spec.base import FieldError, Section
from runtime.spec.cron import parse_cron

_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Metrics where smaller is better: a quality trigger on them fires `above` a value.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})


def parse_duration(text: str) -> timedelta:
    """`30s`, `10m`, `6h`, `1d` -> timedelta; ValueError names the expected form."""
    match = _DURATION.match(str(text).strip())
    if not match:
        raise ValueError(f"expected a duration like 30s, 10m, 6h or 1d, got {text!r}")
    return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


class _Durations(Section):
    @staticmethod
    def _duration(value: str, minimum: timedelta = timedelta(0)) -> str:
        if parse_duration(value) < minimum:
            raise ValueError(f"must be at least {int(minimum.total_seconds())}s, got {value!r}")
        return value


class DriftTrigger(Section):
    min_windows: int = Field(3, ge=1, description="retrain after drift in this many "
                                                  "consecutive windows")


class QualityTrigger(Section):
    metric: str = Field(description="a metric of the task, computed on labeled captured rows")
    below: float | None = Field(None, description="retrain when the champion's live metric "
                                                  "falls below this (accuracy, f1_macro, r2...)")
    above: float | None = Field(None, description="retrain when an error metric (rmse, mae, "
                                                  "log_loss) rises above this")
    min_labels: int = Field(200, ge=1, description="labeled rows in the window before the "
                                                   "metric counts")

    @model_validator(mode="after")
    def _one_bound(self) -> QualityTrigger:
        lower = self.metric in LOWER_IS_BETTER
        if self.below is None and self.above is None:
            raise ValueError(f"set {'above' if lower else 'below'}: the value of {self.metric} "
                             "that triggers a retrain")
        if lower and self.below is not None:
            raise FieldError(("below",), f"{self.metric} is an error (smaller is better): use "
                                         "above")
        if not lower and self.above is not None:
            raise FieldError(("above",), f"{self.metric}: larger is better: use below")
        return self


class Triggers(Section):
    drift: DriftTrigger | None = DriftTrigger()
    quality: QualityTrigger | None = None
    schedule: str | None = Field(None, description="cron, 5 fields, UTC: minute hour "
                                                   "day-of-month month day-of-week")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            parse_cron(value)
        return value


class Retrain(_Durations):
    data: Literal["source", "source+captures"] = Field(
        "source", description="source+captures: the labeled captured rows are appended to the "
                              "source (same checks, fingerprint and split)")
    cooldown: str = Field("6h", description="no second retrain before this (a manual trigger "
                                            "is not held back)")
    max_per_day: int = Field(2, ge=1, description="retrains per UTC day at most")

    @field_validator("cooldown")
    @classmethod
    def _cooldown(cls, value: str) -> str:
        return cls._duration(value)

    @property
    def cooldown_s(self) -> float:
        return parse_duration(self.cooldown).total_seconds()


class Rollout(Section):
    canary_weight: float | None = Field(
        None, ge=0, lt=1, description="share of traffic the challenger gets; 0 promotes as soon "
                                      "as the gate passes; default serve.canary.weight, or 0 "
                                      "without serve.canary")
    min_labeled: int = Field(200, ge=1, description="labeled canary requests before deciding")
    max_quality_drop: float = Field(0.0, ge=0, description="the challenger must score >= the "
                                    "champion - this on live labels, else it is rolled back")


class Monitor(_Durations):
    interval: str = Field("10m", description="one watch cycle = one monitoring window")
    drift: DriftSettings = Field(default_factory=DriftSettings,
                                 description="drift scores and thresholds (see README: Monitoring)")
    triggers: Triggers = Triggers()
    retrain: Retrain = Retrain()
    rollout: Rollout = Rollout()

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        return cls._duration(value, timedelta(seconds=10))

    @property
    def interval_s(self) -> float:
        return parse_duration(self.interval).total_seconds()
