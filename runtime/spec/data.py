"""The `data:` section: source, target and features, split, preprocessing ops, checks."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from runtime.spec.base import Section, in_order

SKLEARN_DATASETS = ("digits", "breast_cancer", "wine", "iris", "diabetes")


class SklearnSource(Section):
    kind: Literal["sklearn"]
    name: Literal["digits", "breast_cancer", "wine", "iris", "diabetes"]


class ParquetSource(Section):
    kind: Literal["parquet"]
    path: str = Field(min_length=1, description="file, directory, glob or pyarrow filesystem URI")


class CsvSource(Section):
    kind: Literal["csv"]
    path: str = Field(min_length=1, description="file, directory, glob or pyarrow filesystem URI")


class SyntheticSource(Section):
    kind: Literal["synthetic"]
    rows: int = Field(1000, ge=10)
    features: int = Field(8, ge=1)
    classes: int = Field(2, ge=0, description="0 makes a regression target")
    seed: int = 0

    @field_validator("classes")
    @classmethod
    def _not_one_class(cls, v: int) -> int:
        if v == 1:
            raise ValueError("must be 0 (regression) or >= 2 classes")
        return v


Source = Annotated[
    SklearnSource | ParquetSource | CsvSource | SyntheticSource, Field(discriminator="kind")
]


class Split(Section):
    test: float = Field(0.2, gt=0, lt=1)
    validation: float = Field(0.1, ge=0, lt=1)
    seed: int = 0
    stratify: bool | None = Field(None, description="default: true for classification")

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> Split:
        if self.test + self.validation >= 0.9:
            raise ValueError(
                f"test + validation must leave >= 10% for training, got "
                f"{self.test} + {self.validation}"
            )
        return self


ColumnSelector = Union[Literal["numeric", "categorical", "all"], list[str]]


class StandardScale(Section):
    op: Literal["standard_scale"]
    columns: ColumnSelector = "numeric"


class MinMaxScale(Section):
    op: Literal["min_max_scale"]
    columns: ColumnSelector = "numeric"


class OneHot(Section):
    op: Literal["one_hot"]
    columns: ColumnSelector = "categorical"
    max_categories: int | None = Field(None, ge=1)


class Impute(Section):
    op: Literal["impute"]
    columns: ColumnSelector = "numeric"
    strategy: Literal["mean", "most_frequent", "constant"] = "mean"
    fill_value: float | str | None = None

    @model_validator(mode="after")
    def _constant_needs_value(self) -> Impute:
        if self.strategy == "constant" and self.fill_value is None:
            raise ValueError("strategy 'constant' needs fill_value")
        return self


class Ordinal(Section):
    """Each category -> its index among the training split's sorted categories (one model
    input per column); unseen categories and nulls -> -1."""

    op: Literal["ordinal"]
    columns: ColumnSelector = "categorical"


class HashBucket(Section):
    """Each value -> one of `buckets` indicator columns by a stable hash of its text: nothing
    to fit, and unseen categories still land in a bucket. Nulls -> all zeros."""

    op: Literal["hash_bucket"]
    columns: ColumnSelector = "categorical"
    buckets: int = Field(16, ge=2, le=1_000_000)


class Log1p(Section):
    """sign(x) * log(1 + |x|): log1p for x >= 0, and defined (odd) below, so no input turns
    into NaN at serving time."""

    op: Literal["log1p"]
    columns: ColumnSelector = "numeric"


class Clip(Section):
    op: Literal["clip"]
    columns: ColumnSelector = "numeric"
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Clip:
        if self.min is None and self.max is None:
            raise ValueError("clip needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"clip min {self.min} is above max {self.max}")
        return self


PreprocessOp = Annotated[
    StandardScale | MinMaxScale | OneHot | Impute | Ordinal | HashBucket | Log1p | Clip,
    Field(discriminator="op"),
]



class ColumnCheck(Section):
    dtype: Literal["numeric", "integer", "categorical"] | None = None
    min: float | None = None
    max: float | None = None
    allowed: list[str | int | float | bool] | None = Field(None, min_length=1)
    max_null_fraction: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> ColumnCheck:
        in_order("min", self.min, "max", self.max)
        if self.allowed is not None and (self.min is not None or self.max is not None):
            raise ValueError("use either allowed (categories) or min/max (a range), not both")
        return self


class Checks(Section):
    min_rows: int = Field(0, ge=0)
    max_null_fraction: float = Field(1.0, ge=0, le=1)
    columns: dict[str, ColumnCheck] = Field(
        {}, description="per-column checks: dtype, min, max, allowed, max_null_fraction")
    on_fail: Literal["stop", "drop_rows"] = Field(
        "stop", description="rows failing a range or allowed-values check: stop the run, or drop "
                            "them and go on (dtype, null and min_rows checks always stop)")


class Data(Section):
    source: Source
    target: str = Field("target", min_length=1)
    features: Literal["all"] | list[str] = "all"
    split: Split = Split()
    preprocess: list[PreprocessOp] = []
    checks: Checks = Checks()

    @field_validator("features")
    @classmethod
    def _features_unique(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("must name at least one column, or be 'all'")
            dupes = sorted({c for c in v if v.count(c) > 1})
            if dupes:
                raise ValueError(f"columns listed twice: {dupes}")
        return v

    @model_validator(mode="after")
    def _target_not_a_feature(self) -> Data:
        if isinstance(self.features, list) and self.target in self.features:
            raise ValueError(f"the target '{self.target}' cannot also be a feature")
        return self
