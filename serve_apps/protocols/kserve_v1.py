"""KServe's v1 protocol (the TensorFlow Serving REST shape), framework-free.

    GET  {route}/v1/models                 {"models": [name]}
    GET  {route}/v1/models/{name}          {"name": name, "ready": true}
    POST {route}/v1/models/{name}:predict  {"instances": [...]} or {"inputs": ...}
                                           -> {"predictions": [...]}

Anchor: kserve python/kserve/kserve/protocol/rest/v1_endpoints.py (routes, `model_ready`) and
kserve/errors.py (`{"error": ...}`: 400 invalid input, 404 "Model with name X does not exist.").

`instances` is a list of rows (lists in feature order or objects keyed by feature name, as on
/predict); `inputs` is the same list, or TF Serving's columnar form `{"feature": [...], ...}`.
The answer is /predict's body: `predictions` (one label or value per row), `probabilities`
for classifiers, `model` (name, version) and `request_id`.

Where this deviates from the anchor, and why:
- Both `instances` and `inputs` in one body is a 400 (KServe silently reads `inputs`).
- Other top-level keys (`signature_name`, a client's own) are ignored, as KServe does; /predict
  refuses them, but v1 clients send them.
- A value the model cannot take is a 400 with mlrt's row-and-feature message (422 on /predict),
  as KServe's InvalidInput; 401/413/503 keep their status, all as `{"error": ...}`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serve_apps.protocols._common import (
    ModelInfo,
    Reply,
    client_status,
    decode_json,
    json_reply,
    mlrt_fields,
    rows_from_columns,
)
from serve_apps.validate import BadRequest, Features, kind_of, parse_rows, shorten


def models_list(model: ModelInfo) -> dict:
    return {"models": [model.name]}


def model_status(name: str, model: ModelInfo) -> dict:
    check_model(name, model)
    return {"name": model.name, "ready": True}


def check_model(name: str, model: ModelInfo) -> None:
    if name != model.name:
        raise BadRequest(404, f"Model with name {shorten(name)} does not exist; this endpoint "
                              f"serves '{model.name}'")


def parse_predict(body: bytes, features: Features) -> np.ndarray | list[list[Any]]:
    """A :predict body -> checked rows in feature order. Raises BadRequest (400, 422)."""
    data = decode_json(body)
    if not isinstance(data, dict):
        raise BadRequest(400, f'the body must be a JSON object {{"instances": [row, ...]}}, '
                              f"got {kind_of(data)}")
    given = [k for k in ("instances", "inputs") if k in data]
    if len(given) != 1:
        raise BadRequest(400, "the body must hold exactly one of 'instances' and 'inputs'")
    key = given[0]
    if key == "inputs" and isinstance(data[key], dict):
        return rows_from_columns(data[key], features, key)
    return parse_rows(data[key], features, key)


def predict_reply(labels: Any, proba: Any, model: ModelInfo,
                  request_id: str | None = None) -> Reply:
    return json_reply(mlrt_fields(labels, proba, model, request_id))


def error_reply(e: BadRequest, request_id: str | None = None) -> Reply:
    """`{"error": message}` (KServe's shape; the id is in the x-request-id header)."""
    return json_reply({"error": e.message}, client_status(e))
