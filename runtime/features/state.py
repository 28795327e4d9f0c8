"""The fitted preprocessing state: typed in memory, `preprocess.json` on disk.

    state = PreprocessState.from_json(json.loads(path.read_text()))
    state.steps[0].mean["age"]          # what standard_scale learned for one column
    path.write_text(json.dumps(state.to_json()))

One class per op; each field is a key of the step's JSON object, so the file format is the
dataclasses' fields and nothing else (model versions registered before these types existed load
unchanged: tests/data/before_layout). Per-column values are keyed by column name; a value is
None where the training split had no non-null value to learn from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from runtime.errors import InputError

STATE_VERSION = 1


@dataclass(frozen=True)
class Step:
    """One fitted step: its op, the columns it applies to, what it learned (subclasses)."""

    op: ClassVar[str]
    columns: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "columns": list(self.columns)}
        for f in dataclasses.fields(self):
            if f.name != "columns":
                out[f.name] = getattr(self, f.name)
        return out


@dataclass(frozen=True)
class StandardScaleStep(Step):
    op: ClassVar[str] = "standard_scale"
    mean: Mapping[str, float | None]
    std: Mapping[str, float | None]  # population std (ddof=0)


@dataclass(frozen=True)
class MinMaxScaleStep(Step):
    op: ClassVar[str] = "min_max_scale"
    min: Mapping[str, float | None]
    max: Mapping[str, float | None]


@dataclass(frozen=True)
class ImputeStep(Step):
    op: ClassVar[str] = "impute"
    values: Mapping[str, Any]  # the fill value per column (a number or a category)


@dataclass(frozen=True)
class OneHotStep(Step):
    op: ClassVar[str] = "one_hot"
    categories: Mapping[str, list]  # sorted; one indicator column each


@dataclass(frozen=True)
class OrdinalStep(Step):
    op: ClassVar[str] = "ordinal"
    categories: Mapping[str, list]  # sorted; a value's code is its index, unseen -> -1


@dataclass(frozen=True)
class HashBucketStep(Step):
    op: ClassVar[str] = "hash_bucket"
    buckets: int


@dataclass(frozen=True)
class Log1pStep(Step):
    op: ClassVar[str] = "log1p"


@dataclass(frozen=True)
class ClipStep(Step):
    op: ClassVar[str] = "clip"
    min: float | None
    max: float | None


STEP_TYPES: dict[str, type[Step]] = {t.op: t for t in (
    StandardScaleStep, MinMaxScaleStep, ImputeStep, OneHotStep, OrdinalStep, HashBucketStep,
    Log1pStep, ClipStep)}


def step_from_json(data: Mapping[str, Any]) -> Step:
    """A step from its JSON object; an unknown op or a missing field names the problem."""
    kind = STEP_TYPES.get(data.get("op"))
    if kind is None:
        raise InputError(f"preprocess.json: unknown op {data.get('op')!r} (known: "
                         f"{', '.join(STEP_TYPES)})")
    names = [f.name for f in dataclasses.fields(kind)]
    missing = [n for n in names if n not in data]
    if missing:
        raise InputError(f"preprocess.json: step {data['op']!r} lacks {missing}")
    values = {n: data[n] for n in names}
    values["columns"] = tuple(values["columns"])
    return kind(**values)


@dataclass(frozen=True)
class PreprocessState:
    """What the fit learned, in spec order, and the raw features it expects."""

    features: tuple[str, ...]
    feature_types: Mapping[str, str]  # feature -> "numeric" | "categorical"
    steps: tuple[Step, ...]
    version: int = STATE_VERSION

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "features": list(self.features),
                "feature_types": dict(self.feature_types),
                "steps": [s.to_json() for s in self.steps]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PreprocessState:
        return cls(features=tuple(data["features"]), feature_types=dict(data["feature_types"]),
                   steps=tuple(step_from_json(s) for s in data.get("steps", [])),
                   version=int(data.get("version", STATE_VERSION)))

    def steps_of(self, op: str) -> list[Step]:
        return [s for s in self.steps if s.op == op]
