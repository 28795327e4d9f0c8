"""Request bodies of `POST /predict` -> feature rows, or a 4xx naming what was wrong. No Ray.

A body is `{"instances": [...]}`; each row is a list in feature order or an object keyed by
feature name (the KServe v1 / MLflow scoring shape). Every problem names the row and the
feature (`instances[3]: feature 'mean radius' must be a finite number, got NaN`), so a client
can fix its request without reading server logs. The request model for the OpenAPI page is
generated from the same feature list (`request_schema`).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field, create_model

_NUMBER = (int, float)
_MAX_SHOWN = 80


class BadRequest(Exception):
    """A client error with its HTTP status (422, 413, 401)."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class Features:
    """What a served model takes: names in order, numeric or categorical, nullable (imputed)."""

    names: tuple[str, ...]
    categorical: frozenset[str]
    nullable: frozenset[str]

    @property
    def name_set(self) -> frozenset[str]:
        return frozenset(self.names)

    @classmethod
    def from_state(cls, state: dict) -> Features:
        types = state.get("feature_types", {})
        imputed = {c for step in state.get("steps", []) if step.get("op") == "impute"
                   for c in step.get("columns", [])}
        names = tuple(state["features"])
        return cls(names, frozenset(c for c in names if types.get(c) == "categorical"),
                   frozenset(imputed))

    @property
    def all_numeric(self) -> bool:
        return not self.categorical and not self.nullable


def parse_body(body: bytes, features: Features) -> np.ndarray | list[list[Any]]:
    """The request body -> rows in feature order, values checked: a float64 matrix when every
    feature is numeric (the fast path), else a list of rows. Raises BadRequest(422)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise BadRequest(422, f"body is not valid JSON: {_short(e)}") from None
    if not isinstance(data, dict) or "instances" not in data:
        raise BadRequest(422, 'body must be a JSON object {"instances": [row, ...]}')
    unknown = sorted(k for k in data if k != "instances")
    if unknown:
        raise BadRequest(422, f"unknown top-level field(s) {unknown}; only 'instances' is read")
    instances = data["instances"]
    if not isinstance(instances, list) or not instances:
        raise BadRequest(422, "instances must be a non-empty list of rows")
    rows = [_row(i, row, features) for i, row in enumerate(instances)]
    if not features.all_numeric:
        return rows
    try:
        matrix = np.asarray(rows, dtype=np.float64)
    except OverflowError:  # an integer beyond float range: find it the slow way
        for i, row in enumerate(rows):
            for name, v in zip(features.names, row, strict=True):
                _value(i, name, v, features)
        raise
    finite = np.isfinite(matrix)
    if not finite.all():
        i, j = (int(k) for k in np.argwhere(~finite)[0])
        _bad_value(i, features.names[j], rows[i][j])
    return matrix


def _row(i: int, row: Any, features: Features) -> list[Any]:
    names = features.names
    if isinstance(row, list):
        if len(row) != len(names):
            raise BadRequest(422, f"instances[{i}]: expected {len(names)} features in this "
                                  f"order {_preview(names)}, got {len(row)} values")
        values = row
    elif isinstance(row, dict):
        known = features.name_set
        unknown = [k for k in row if k not in known]
        if unknown:
            raise BadRequest(422, f"instances[{i}]: unknown feature name(s) {_preview(unknown)}"
                                  f"; the model takes {_preview(names)}")
        missing = [n for n in names if n not in row]
        if missing:
            raise BadRequest(422, f"instances[{i}]: missing feature(s) {_preview(missing)}")
        values = [row[n] for n in names]
    else:
        raise BadRequest(422, f"instances[{i}]: a row must be a list in feature order or an "
                              f"object keyed by feature name, got {_kind(row)}")
    if features.all_numeric and all(type(v) is float or type(v) is int for v in values):
        return values  # finiteness is checked on the whole matrix
    return [_value(i, name, v, features) for name, v in zip(names, values, strict=True)]


def _value(i: int, name: str, v: Any, features: Features) -> Any:
    if v is None:
        if name in features.nullable:
            return None
        raise BadRequest(422, f"instances[{i}]: feature '{name}' is null; the model has no "
                              "imputation for it")
    if name in features.categorical:
        if isinstance(v, str) or (isinstance(v, _NUMBER) and not isinstance(v, bool)
                                  and (isinstance(v, int) or math.isfinite(v))):
            return v
        raise BadRequest(422, f"instances[{i}]: feature '{name}' must be a category (string), "
                              f"got {_kind(v)}")
    if isinstance(v, bool) or not isinstance(v, _NUMBER):
        raise BadRequest(422, f"instances[{i}]: feature '{name}' must be a number, got "
                              f"{_kind(v)}")
    # the same bounds as the float64 matrix of the numeric path: NaN/inf, or an int beyond it
    if (isinstance(v, float) and not math.isfinite(v)) or (
            isinstance(v, int) and abs(v) > sys.float_info.max):
        _bad_value(i, name, v)
    return v


def _bad_value(i: int, name: str, v: Any) -> None:
    raise BadRequest(422, f"instances[{i}]: feature '{name}' must be a finite number, got "
                          f"{_short(v)}")


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    name = {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}.get(type(v))
    return f"{name} {_short(json.dumps(v))}" if name else _short(v)


def _short(v: Any) -> str:
    text = str(v)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _preview(names: Any, n: int = 8) -> str:
    names = list(names)
    shown = ", ".join(repr(x) for x in names[:n])
    return f"[{shown}{', ...' if len(names) > n else ''}] ({len(names)})"


def request_schema(features: Features) -> dict:
    """OpenAPI schema of the request body, from a pydantic model generated from the model's
    input signature (feature names and types). Returns {"body": schema, "defs": {...}}."""
    fields: dict[str, Any] = {}
    for j, name in enumerate(features.names):
        kind: Any = str if name in features.categorical else float
        if name in features.nullable:
            kind = kind | None
        fields[f"f{j}"] = (kind, Field(alias=name))
    row = create_model("Row", __config__=ConfigDict(extra="forbid"), **fields)
    width = len(features.names)
    positional = list[float | str] if features.categorical else list[float]
    request = create_model(
        "PredictRequest",
        instances=(list[row | positional], Field(  # type: ignore[valid-type]
            min_length=1, description=f"rows: objects keyed by feature name, or lists of "
                                      f"{width} values in feature order")))
    schema = request.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {"body": schema, "defs": defs}
