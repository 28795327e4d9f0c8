"""What the protocol adapters share: the served model as they see it, a reply that knows no web
framework, JSON decoding and dict-of-columns rows. No Ray, no HTTP."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serve_apps.validate import BadRequest, Features, check_names, kind_of, parse_rows, shorten


@dataclass(frozen=True)
class ModelInfo:
    """One served model version, as a protocol describes it."""

    name: str
    version: str
    features: Features
    classes: tuple | None = None  # None: a regressor

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None


@dataclass(frozen=True)
class Reply:
    """A protocol's answer: the route only copies it into its framework's response."""

    status: int
    body: bytes
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body decoded (tests; the JSON part of a binary OIP answer)."""
        length = self.headers.get("inference-header-content-length")
        return json.loads(self.body[:int(length)] if length else self.body)


def json_reply(obj: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(obj, separators=(",", ":")).encode())


def client_status(e: BadRequest) -> int:
    """OIP and KServe v1 answer 400 where mlrt's row checks say 422 (their clients expect one
    status for a bad request); an error about a request header keeps its own."""
    return 400 if e.status == 422 and e.header is None else e.status


def decode_json(body: bytes, status: int = 400) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise BadRequest(status, f"body is not valid JSON: {shorten(e)}") from None


def split_media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """`text/csv; charset=utf-8` -> ("text/csv", {"charset": "utf-8"}), lower-cased."""
    mime, *params = (content_type or "").split(";")
    pairs = (p.partition("=") for p in params if p.strip())
    return mime.strip().lower(), {k.strip().lower(): v.strip().strip('"').lower()
                                  for k, _, v in pairs}


def rows_from_columns(columns: dict, features: Features, where: str, *,
                      nan_is_null: bool = False) -> np.ndarray | list[list[Any]]:
    """`{"feature": [v, ...], ...}` -> checked rows (validate.parse_rows). Columns that are not
    lists or differ in length are a 400 (not a table); unknown or missing names a 422."""
    lengths = {}
    for name, values in columns.items():
        if not isinstance(values, list):
            raise BadRequest(400, f"{where}: column '{shorten(name)}' must be a list of values, "
                                  f"got {kind_of(values)}")
        lengths[name] = len(values)
    if len(set(lengths.values())) > 1:
        raise BadRequest(400, f"{where}: columns differ in length {shorten(lengths)}")
    check_names(columns, features, where)
    rows = [list(r) for r in zip(*(columns[n] for n in features.names), strict=True)]
    if not rows:
        raise BadRequest(422, f"{where}: the columns hold no rows")
    return parse_rows(rows, features, f"{where} (row {{}})", nan_is_null=nan_is_null)


def label_records(labels: Any, proba: Any, model: ModelInfo) -> list[dict]:
    """MLflow pyfunc's output frame (runtime.inference.Predictor.output_columns) as records:
    `prediction`, then `probability_<class>` per class."""
    values = np.asarray(labels).tolist()
    if proba is None:
        return [{"prediction": v} for v in values]
    keys = [f"probability_{c}" for c in model.classes]
    return [{"prediction": v, **dict(zip(keys, p, strict=True))}
            for v, p in zip(values, np.asarray(proba, dtype=np.float64).tolist(), strict=True)]


def mlrt_fields(labels: Any, proba: Any, model: ModelInfo, request_id: str | None) -> dict:
    """The body of mlrt's own /predict answer (also KServe v1's: `predictions` first)."""
    out: dict[str, Any] = {"predictions": np.asarray(labels).tolist()}
    if proba is not None:
        out["probabilities"] = np.asarray(proba, dtype=np.float64).tolist()
    out["model"] = {"name": model.name, "version": model.version}
    if request_id is not None:
        out["request_id"] = request_id
    return out
