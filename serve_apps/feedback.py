"""`POST {route}/feedback`: late labels by request id, stored beside the captures (layout.py:
{storage}/labels/{model}/...) for `mlrt monitor` to join when it runs. Same API key as
/predict. Body:

    {"labels": [{"request_id": "order-42", "label": 1}, ...]}     at most MAX_LABELS per call

A classifier's label must be one of the model's classes (as /predict answers them: 1, "1" and
1.0 are the same class); a regressor's a finite number. A bad entry is a 422 naming its index
and value, and nothing of that call is stored. The answer: `{"accepted": n, "request_id": ...}`
(0 accepted when the replica's label queue is full: the drop is counted, send again).
Without `serve.capture` there is nothing to join labels to: 404 saying so.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from runtime.monitoring.window import category_key
from serve_apps.protocols._common import decode_json, json_reply
from serve_apps.routes import _SANE_ID, PREDICT, Call, _read_body, answer, champion
from serve_apps.validate import BadRequest, kind_of

if TYPE_CHECKING:
    from serve_apps.predictor import ModelServer
    from serve_apps.routing import Loaded

MAX_LABELS = 10_000


def parse_labels(body: bytes, classes: list | tuple | None) -> tuple[list[str], list[Any]]:
    """A feedback body -> (request ids, labels: category_key text for a classifier, float for a
    regressor). Raises BadRequest(422) naming the entry."""
    data = decode_json(body, 422)
    if not isinstance(data, dict) or set(data) != {"labels"}:
        raise BadRequest(422, 'body must be a JSON object {"labels": [{"request_id": "...", '
                              '"label": ...}, ...]} (no other field)')
    entries = data["labels"]
    if not isinstance(entries, list) or not entries:
        raise BadRequest(422, "labels must be a non-empty list")
    if len(entries) > MAX_LABELS:
        raise BadRequest(422, f"labels: {len(entries)} entries, at most {MAX_LABELS} per "
                              "request; send them in several")
    known = None if classes is None else {category_key(c): c for c in classes}
    ids, values = [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"request_id", "label"}:
            raise BadRequest(422, f"labels[{i}]: must be an object with request_id and label "
                                  f"only, got {kind_of(entry)}")
        rid, label = entry["request_id"], entry["label"]
        if not isinstance(rid, str) or not _SANE_ID.fullmatch(rid):
            raise BadRequest(422, f"labels[{i}].request_id: must be 1-128 printable ASCII "
                                  f"characters without spaces, got {kind_of(rid)}")
        ids.append(rid)
        values.append(_label(i, label, known))
    return ids, values


def _label(i: int, label: Any, known: dict[str, Any] | None) -> Any:
    if known is None:
        if isinstance(label, bool) or not isinstance(label, int | float) or not math.isfinite(
                label):
            raise BadRequest(422, f"labels[{i}].label: the model is a regressor, the label must "
                                  f"be a finite number, got {kind_of(label)}")
        return float(label)
    key = None if isinstance(label, bool | dict | list) or label is None else category_key(label)
    if key not in known:
        raise BadRequest(422, f"labels[{i}].label: {kind_of(label)} is not one of the model's "
                              f"classes {list(known.values())[:20]}")
    return key


def add_route(app: FastAPI, server: ModelServer) -> None:
    async def feedback_handler(loaded: Loaded, call: Call) -> Any:
        capture = getattr(server, "capture", None)
        if capture is None:
            raise BadRequest(404, "feedback needs request capture: this app has no "
                                  "serve.capture section")
        body = await _read_body(call.request, server.args.serve.max_payload_bytes)
        ids, labels = parse_labels(body, loaded.predictor.classes)
        return json_reply({"accepted": capture.add_labels(ids, labels),
                           "request_id": call.request_id})

    # without capture it only answers 404 saying why: not part of the app's OpenAPI document
    @app.post("/feedback", include_in_schema=server.args.serve.capture is not None)
    async def feedback(request: Request) -> Response:
        return await answer(server, request, PREDICT, feedback_handler, select=champion,
                            predicts=False)
