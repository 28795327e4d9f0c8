"""Request bodies of `POST /predict` -> feature rows, or a 4xx naming what was wrong. No Ray.

A body is `{"instances": [...]}`; each row is a list in feature order or an object keyed by
feature name (the KServe v1 / MLflow scoring shape). Every problem names the row and the
feature (`instances[3]: feature 'mean radius' must be a finite number, got NaN`), so a client
can fix its request without reading server logs. The OpenAPI request schemas describe the
same rules (serve_apps/openapi.py).

`parse_rows` is the row-level check every protocol feeds (serve_apps/protocols/): /predict's
`instances`, MLflow's `dataframe_records`/`dataframe_split`/CSV, OIP v2 tensors and KServe v1
all end up as a list of rows here, so a value is accepted or refused the same way, with the same
message, whichever protocol carried it. `check_names` is the feature-name check for formats
that name their columns once (a CSV header, a dict of columns, OIP inputs).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.features.state import PreprocessState

_NUMBER = (int, float)
_MAX_SHOWN = 80
# The largest magnitude a numeric feature may have: every int64 fits (ids, timestamps in ns),
# and after scaling (spread >= 1e-8) a value stays far inside float32, so a model's arithmetic
# cannot overflow into a non-finite answer. The OpenAPI schemas say the same (serve_apps/openapi).
MAX_NUMBER = 1e19


class BadRequest(Exception):
    """A client error with its HTTP status (422, 413, 401). `header`: the request header at
    fault (x-request-id); such an error keeps its status on every protocol."""

    def __init__(self, status: int, message: str, header: str | None = None):
        self.status = status
        self.message = message
        self.header = header
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
    def from_state(cls, state: PreprocessState) -> Features:
        types = state.feature_types
        imputed = {c for step in state.steps_of("impute") for c in step.columns}
        names = tuple(state.features)
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
        raise BadRequest(422, f"body is not valid JSON: {shorten(e)}") from None
    if not isinstance(data, dict) or "instances" not in data:
        raise BadRequest(422, 'body must be a JSON object {"instances": [row, ...]}')
    unknown = sorted(k for k in data if k != "instances")
    if unknown:
        raise BadRequest(422, f"unknown top-level field(s) {unknown}; only 'instances' is read")
    return parse_rows(data["instances"], features)


def parse_rows(rows: Any, features: Features, where: str = "instances", *,
               nan_is_null: bool = False) -> np.ndarray | list[list[Any]]:
    """Rows (each a list in feature order or an object keyed by feature name) -> the rows in
    feature order, values checked: a float64 matrix when every feature is numeric, else a list
    of rows. Errors name row i as `{where}[i]`, or `where` with its last `{}` replaced by i
    (`"text/csv (row {})"`). `nan_is_null`: a NaN is a missing value (pandas and numpy
    clients send NaN for null), so it is imputed for a nullable feature; elsewhere it stays
    non-finite.
    Raises BadRequest(422)."""
    head, template, tail = where.rpartition("{}")  # the last: a client's names may hold one

    def at(i: int) -> str:
        return f"{head}{i}{tail}" if template else f"{where}[{i}]"

    if not isinstance(rows, list) or not rows:
        raise BadRequest(422, f"{where} must be a non-empty list of rows")
    checked = [_row(at(i), row, features, nan_is_null) for i, row in enumerate(rows)]
    if not features.all_numeric:
        return checked
    try:
        matrix = np.asarray(checked, dtype=np.float64)
    except OverflowError:  # an integer beyond float range: find it the slow way
        for i, row in enumerate(checked):
            for name, v in zip(features.names, row, strict=True):
                _value(at(i), name, v, features, nan_is_null)
        raise
    magnitude = np.abs(matrix)
    inside = magnitude <= MAX_NUMBER  # False for NaN and inf too
    if not inside.all():
        i, j = (int(k) for k in np.argwhere(~inside)[0])
        _bad_value(at(i), features.names[j], checked[i][j])
    for i, j in np.argwhere(magnitude == MAX_NUMBER):  # an int just above rounds to it
        _value(at(int(i)), features.names[j], checked[i][j], features, nan_is_null)
    return matrix


def check_names(given: Any, features: Features, where: str) -> None:
    """Feature names given once for all rows (a header, columns, inputs): none unknown, none
    missing. Raises BadRequest(422) naming them."""
    known = features.name_set
    unknown = [k for k in given if k not in known]
    if unknown:
        raise BadRequest(422, f"{where}: unknown feature name(s) {preview(unknown)}"
                              f"; the model takes {preview(features.names)}")
    missing = [n for n in features.names if n not in given]
    if missing:
        raise BadRequest(422, f"{where}: missing feature(s) {preview(missing)}")


def _row(at: str, row: Any, features: Features, nan_is_null: bool) -> list[Any]:
    names = features.names
    if isinstance(row, list):
        if len(row) != len(names):
            raise BadRequest(422, f"{at}: expected {len(names)} features in this "
                                  f"order {preview(names)}, got {len(row)} values")
        values = row
    elif isinstance(row, dict):
        check_names(row, features, at)
        values = [row[n] for n in names]
    else:
        raise BadRequest(422, f"{at}: a row must be a list in feature order or an "
                              f"object keyed by feature name, got {kind_of(row)}")
    if features.all_numeric and all(type(v) is float or type(v) is int for v in values):
        return values  # finiteness is checked on the whole matrix
    return [_value(at, name, v, features, nan_is_null)
            for name, v in zip(names, values, strict=True)]


def _value(at: str, name: str, v: Any, features: Features, nan_is_null: bool = False) -> Any:
    if nan_is_null and type(v) is float and v != v and name in features.nullable:
        return None
    if v is None:
        if name in features.nullable:
            return None
        raise BadRequest(422, f"{at}: feature '{name}' is null; the model has no "
                              "imputation for it")
    if name in features.categorical:
        if isinstance(v, str) or (isinstance(v, _NUMBER) and not isinstance(v, bool)
                                  and (isinstance(v, int) or math.isfinite(v))):
            return v
        raise BadRequest(422, f"{at}: feature '{name}' must be a category (string), "
                              f"got {kind_of(v)}")
    if isinstance(v, bool) or not isinstance(v, _NUMBER):
        raise BadRequest(422, f"{at}: feature '{name}' must be a number, got "
                              f"{kind_of(v)}")
    # the same bounds as the float64 matrix of the numeric path
    if not abs(v) <= MAX_NUMBER:  # NaN compares False
        _bad_value(at, name, v)
    return v


def _bad_value(at: str, name: str, v: Any) -> None:
    if isinstance(v, float) and not math.isfinite(v):
        raise BadRequest(422, f"{at}: feature '{name}' must be a finite number, got "
                              f"{shorten(v)}")
    raise BadRequest(422, f"{at}: feature '{name}' must be a finite number within "
                          f"±{MAX_NUMBER:.0e}, got {shorten(v)}")


def kind_of(v: Any) -> str:
    """A value as error messages show it: `a string "2"`, `null`, `a list [1]`."""
    if v is None:
        return "null"
    name = {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}.get(type(v))
    return f"{name} {shorten(json.dumps(v))}" if name else shorten(v)


def shorten(v: Any) -> str:
    """str(v), cut to a length an error message can carry."""
    text = str(v)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def preview(names: Any, n: int = 8) -> str:
    """The first n names and the count: `['a', 'b', ...] (30)`."""
    names = list(names)
    shown = ", ".join(repr(x) for x in names[:n])
    return f"[{shown}{', ...' if len(names) > n else ''}] ({len(names)})"
