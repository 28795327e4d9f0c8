"""The `monitor.drift` spec section: how drift is scored and when a feature counts as drifted.

Self-contained so it can be attached to the job spec as `monitor.drift`:

    monitor:
      drift:
        method: auto            # auto (= jensen_shannon) | jensen_shannon | psi | wasserstein
        threshold: 0.1          # effect size above which a feature drifts; default per method
        null_rate_threshold: 0.05
        min_rows: 200           # fewer rows: "not enough rows", no verdict
        alpha: 0.001            # chance that sampling noise alone flags any feature of a window
        features:
          age: {threshold: 0.2}
          user_hash: {skip: true}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DriftMethod = Literal["auto", "jensen_shannon", "psi", "wasserstein"]

# Effect sizes on the reference's 20 quantile bins. Jensen-Shannon 0.1 is about a 0.25 sd mean
# shift of a normal feature (0.105; 0.5 sd: 0.21, 0.1 sd: 0.04) and Evidently's default for it;
# PSI 0.1 is credit scoring's "moderate change" line (about a 0.32 sd shift: 0.25 sd gives
# 0.06, 0.5 sd 0.25); normed Wasserstein is in reference sds, 0.1 = a 0.1 sd shift, Evidently's
# default. Each comparison is also gated by sampling noise (see runtime.monitoring.drift).
DEFAULT_THRESHOLDS = {"jensen_shannon": 0.1, "psi": 0.1, "wasserstein": 0.1}


def resolve_method(method: DriftMethod) -> str:
    """`auto` is Jensen-Shannon: bounded, defined when a bin or category is empty on one side,
    and the same scale for numeric bins and categorical frequencies."""
    return "jensen_shannon" if method == "auto" else method


def _check_bound(method: DriftMethod | None, threshold: float | None, where: str) -> None:
    if method is not None and threshold is not None and threshold > 1 and (
            resolve_method(method) == "jensen_shannon"):
        raise ValueError(f"{where}: a Jensen-Shannon distance is at most 1, got {threshold}")


class FeatureDriftSettings(BaseModel):
    """Overrides for one feature (or for `prediction` in prediction drift)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: DriftMethod | None = Field(None, description="default: the section's method")
    threshold: float | None = Field(None, gt=0, description="default: the section's threshold")
    null_rate_threshold: float | None = Field(None, gt=0, le=1)
    skip: bool = Field(False, description="not scored (e.g. a hashed or free-text feature)")


class DriftSettings(BaseModel):
    """How a window is compared with the reference profile; every field has a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: DriftMethod = Field("auto", description="score of numeric features on the "
                                "reference bins; categorical features use Jensen-Shannon, or PSI "
                                "when method is psi")
    threshold: float | None = Field(None, gt=0, description="effect size above which a feature "
                                    f"drifts; default per method: {DEFAULT_THRESHOLDS}")
    null_rate_threshold: float = Field(0.05, gt=0, le=1, description="absolute change of a "
                                       "feature's null rate that counts as drift")
    min_rows: int = Field(200, ge=1, description="fewer rows in the window: 'not enough rows' "
                          "instead of a verdict")
    alpha: float = Field(0.001, gt=0, lt=1, description="family-wise chance that sampling noise "
                         "alone flags a feature; split over the tests (Bonferroni)")
    drift_share: float = Field(0.0, ge=0, le=1, description="dataset drift needs at least this "
                               "share of the scored features drifted (and at least one)")
    features: dict[str, FeatureDriftSettings] = Field(default_factory=dict)

    @field_validator("threshold")
    @classmethod
    def _threshold_fits_method(cls, value: float | None, info) -> float | None:
        _check_bound(info.data.get("method"), value, "threshold")
        return value

    @model_validator(mode="after")
    def _feature_thresholds_fit(self) -> DriftSettings:
        for name, feature in self.features.items():
            _check_bound(feature.method or self.method, feature.threshold,
                         f"features.{name}.threshold")
        return self

    def for_feature(self, name: str, categorical: bool = False) -> tuple[str, float, float, bool]:
        """(method, effect threshold, null-rate threshold, skip) for one feature. Wasserstein
        needs an order, so a categorical feature is scored with Jensen-Shannon instead."""
        own = self.features.get(name, FeatureDriftSettings())
        method = resolve_method(own.method or self.method)
        if categorical and method == "wasserstein":
            method = "jensen_shannon"
            own = own.model_copy(update={"method": method})  # the W threshold does not apply
        if own.threshold is not None:
            threshold = own.threshold
        elif self.threshold is not None and own.method is None:
            threshold = self.threshold
        else:
            threshold = DEFAULT_THRESHOLDS[method]
        null_threshold = own.null_rate_threshold or self.null_rate_threshold
        return method, threshold, null_threshold, own.skip
