"""The OpenAPI document of a replica (`GET {route}/openapi.json`, `/docs`), generated from the
served model's features so that it says exactly what the server accepts: a schema-valid
request is answered 200 and a request the schema refuses is a 4xx (schemathesis checks both in
tests/integration/test_protocol_clients.py).

Per feature: a numeric one is a JSON number within ±validate.MAX_NUMBER, a categorical one a
string (or a number: categories may be numbers), `null` added where the model imputes. A row
is an object with exactly the feature names or a list of exactly F values in feature order.

Where JSON Schema cannot say it, the schema shows a part of what the server accepts and the
description says the rest: equal-length columns (`{"feature": [...]}` bodies, OIP inputs per
feature), a table's rows against its shape (an OIP [N, F] tensor: N from 1 to 3 here), columns
in another order, `dataframe_split.index`, a CSV index column.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from serve_apps.protocols import oip
from serve_apps.protocols.mlflow_scoring import FORMATS
from serve_apps.validate import MAX_NUMBER, Features

if TYPE_CHECKING:
    from serve_apps.predictor import ModelServer

REF = "#/components/schemas/"
_TENSOR_ROWS = (1, 2, 3)  # OIP [N, F] tensors shown for these N
_COLUMN_ROWS = (1, 2)  # OIP inputs per feature shown for these N
_DATATYPES = {"FP": ["FP16", "FP32", "FP64"], "INT": ["INT8", "INT16", "INT32", "INT64"],
              "UINT": ["UINT8", "UINT16", "UINT32", "UINT64"], "BYTES": ["BYTES"]}
_JSON_TYPE = {"FP": "number", "INT": "integer", "UINT": "integer", "BYTES": "string"}


# --- values and rows -------------------------------------------------------------------------

def value_schema(name: str, features: Features) -> dict:
    """One feature's value in a JSON row."""
    if name in features.categorical:
        schema: dict[str, Any] = {"type": ["string", "number"]}
    else:
        schema = {"type": ["number"], "minimum": -MAX_NUMBER, "maximum": MAX_NUMBER}
    return _nullable(schema, name, features)


def element_schema(name: str, features: Features, family: str) -> dict:
    """One feature's element in an OIP tensor of datatype family FP, INT, UINT or BYTES."""
    schema: dict[str, Any] = {"type": [_JSON_TYPE[family]]}
    if name not in features.categorical:
        schema.update(minimum=-MAX_NUMBER, maximum=MAX_NUMBER)
    if family == "UINT":
        schema["minimum"] = 0
    return _nullable(schema, name, features)


def _nullable(schema: dict, name: str, features: Features) -> dict:
    if name in features.nullable:
        schema["type"] = [*schema["type"], "null"]
    if len(schema["type"]) == 1:
        schema["type"] = schema["type"][0]
    return schema


def array_of(items: list[dict]) -> dict:
    """An array of exactly these items, in order (compact when they are all alike)."""
    out: dict[str, Any] = {"type": "array", "minItems": len(items), "maxItems": len(items)}
    if not items:
        del out["minItems"]
    elif all(i == items[0] for i in items):
        out["items"] = items[0]
    else:
        out.update(prefixItems=items, items=False)
    return out


def row_list(features: Features) -> dict:
    """A row as a list of exactly F values in feature order."""
    return array_of([value_schema(n, features) for n in features.names])


def row_object(features: Features) -> dict:
    return {"type": "object", "additionalProperties": False, "required": list(features.names),
            "properties": {n: value_schema(n, features) for n in features.names}}


def _rows(description: str) -> dict:
    return {"type": "array", "minItems": 1, "description": description,
            "items": {"anyOf": [{"$ref": REF + "Row"}, {"$ref": REF + "RowList"}]}}


_ROWS_TEXT = ("rows: objects keyed by feature name, or lists in feature order; the server also "
              "takes one object of equal-length columns {feature: [values]}")


# --- request bodies --------------------------------------------------------------------------

def predict_body() -> dict:
    return {"type": "object", "additionalProperties": False, "required": ["instances"],
            "properties": {"instances": _rows("rows: objects keyed by feature name, or lists "
                                              "in feature order")}}


def invocations_body(features: Features) -> dict:
    """MLflow's four JSON formats: exactly one, `params` optional, other keys ignored."""
    split = {"type": "object", "additionalProperties": False, "required": ["data"],
             "description": "pandas orient='split'; the server also takes the columns in any "
                            "order and an `index` with one label per row",
             "properties": {
                 "columns": {**array_of([{"const": n} for n in features.names]),
                             "type": ["array", "null"]},
                 "data": {"type": "array", "minItems": 1, "items": {"$ref": REF + "RowList"}}}}
    records = {"type": "array", "minItems": 1, "items": {"$ref": REF + "Row"}}
    shapes = {"dataframe_split": split, "dataframe_records": records,
              "instances": _rows(_ROWS_TEXT), "inputs": _rows(_ROWS_TEXT)}
    return {"oneOf": [
        {"type": "object", "required": [key],
         "properties": {key: shapes[key], "params": {"type": "object"},
                        **{other: False for other in FORMATS if other != key}}}
        for key in FORMATS]}


def csv_body(features: Features) -> dict:
    """text/csv: a header row with the feature names, then rows (numbers as decimals)."""
    cells = [_csv_cell(n, features) for n in features.names]
    header = ",".join(_csv_name(n) for n in features.names)
    line = r"(\r\n|\r|\n)+"  # blank lines are skipped, as csv.reader does
    return {"type": "string", "pattern": f"^{header}({line}{','.join(cells)})+({line})?$",
            "description": "a header row with the feature names (any order, an index column "
                           "first allowed), then one row per line; an empty cell is a null"}


def kserve_v1_body() -> dict:
    return {"oneOf": [
        {"type": "object", "required": [key],
         "properties": {key: _rows(_ROWS_TEXT), other: False}}
        for key, other in (("instances", "inputs"), ("inputs", "instances"))]}


def infer_body(features: Features, classes: tuple | None) -> dict:
    """An OIP inference request: one [N, F] tensor (models without categorical features) or
    one input per feature, the outputs to send back, and `id`."""
    forms = [] if features.categorical else [_tensor_request(features, n) for n in _TENSOR_ROWS]
    forms += [_column_request(features, n) for n in _COLUMN_ROWS]
    for form in forms:
        form["properties"].update(id={"type": ["string", "null"]},
                                  outputs=_outputs(classes))
    return {"oneOf": forms, "description": "one [N, F] tensor in feature order, or one input "
                                           "per feature ([N] or [N, 1], any order); the "
                                           "schema shows small N, the server takes any N"}


def feedback_body(classes: tuple | None) -> dict:
    """`{"labels": [{"request_id", "label"}]}`: a class (as /predict answers it, or its text)
    or, for a regressor, a number."""
    from serve_apps.feedback import MAX_LABELS

    if classes is None:
        label: dict[str, Any] = {"type": "number", "minimum": -1.7e308, "maximum": 1.7e308}
    else:
        label = {"enum": list(dict.fromkeys([*classes, *(str(c) for c in classes)]))}
    entry = {"type": "object", "additionalProperties": False,
             "required": ["request_id", "label"],
             "properties": {"request_id": _REQUEST_ID_PARAM["schema"], "label": label}}
    return {"type": "object", "additionalProperties": False, "required": ["labels"],
            "properties": {"labels": {"type": "array", "minItems": 1, "maxItems": MAX_LABELS,
                                      "items": entry}}}


def _tensor_request(features: Features, n: int) -> dict:
    width = len(features.names)
    tensors = []
    for family in ("FP", "INT", "UINT"):
        row = [element_schema(name, features, family) for name in features.names]
        nested = {"type": "array", "minItems": n, "maxItems": n, "items": array_of(row)}
        tensors.append(_input({"type": "string", "not": {"enum": list(features.names)}},
                              [n, width], family, {"anyOf": [array_of(row * n), nested]}))
    return _request("np", {"type": "array", "minItems": 1, "maxItems": 1,
                           "items": {"oneOf": tensors}})


def _column_request(features: Features, n: int) -> dict:
    inputs = []
    for name in features.names:
        options = []
        for family in ("FP", "INT", "UINT", *(["BYTES"] if name in features.categorical
                                              else [])):
            flat = array_of([element_schema(name, features, family)] * n)
            nested = {"type": "array", "minItems": n, "maxItems": n,
                      "items": array_of([element_schema(name, features, family)])}
            options.append(_input({"const": name}, [n], family, flat))
            options.append(_input({"const": name}, [n, 1], family, {"anyOf": [flat, nested]}))
        inputs.append({"oneOf": options})
    return _request("pd", array_of(inputs))


def _input(name: dict, shape: list[int], family: str, data: dict) -> dict:
    return {"type": "object", "required": ["name", "shape", "datatype", "data"],
            "properties": {
                "name": name,
                "shape": array_of([{"const": d} for d in shape]),
                "datatype": {"enum": _DATATYPES[family]},
                "data": data,
                "parameters": {"type": ["object", "null"],
                               "propertyNames": {"not": {"pattern": "^shared_memory"}},
                               "properties": {"binary_data_size": {"type": "null"}}}}}


def _request(content_type: str, inputs: dict) -> dict:
    return {"type": "object", "required": ["inputs"],
            "properties": {
                "inputs": inputs,
                "parameters": {"type": ["object", "null"], "properties": {
                    "content_type": {"enum": [content_type, None]},
                    "binary_data_output": {"type": "boolean"}}}}}


def _outputs(classes: tuple | None) -> dict:
    names = [oip.PREDICT] if classes is None else [oip.PREDICT, oip.PREDICT_PROBA]
    orders = [[]] + [[n] for n in names] + ([names, names[::-1]] if len(names) == 2 else [])
    parameters = {"type": ["object", "null"],
                  "properties": {"binary_data": {"type": "boolean"}, "classification": False}}
    one = {n: {"type": "object", "required": ["name"],
               "properties": {"name": {"const": n}, "parameters": parameters}}
           for n in names}
    return {"anyOf": [{"type": "null"}] + [array_of([one[n] for n in o]) for o in orders]}


def _csv_cell(name: str, features: Features) -> str:
    if name in features.categorical:
        cell = r'[^,"\r\n\x00][^,\r\n\x00]*'  # text but a separator or NUL; a quote inside
    else:
        cell = r"[-+]?[0-9]{1,18}(\.[0-9]*)?"  # below MAX_NUMBER; the server also takes 2e3
    return f"({cell})?" if name in features.nullable else f"({cell})"


def _csv_name(name: str) -> str:
    if re.search(r'[,"\n\r]', name):
        name = '"' + name.replace('"', '""') + '"'
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", name)


# --- the document ----------------------------------------------------------------------------

def document(title: str, description: str, server: ModelServer) -> dict:
    routing = server.routing
    model = routing.champion.info
    features = model.features
    keyed = server.args.serve.auth is not None
    name = {"name": "name", "in": "path", "required": True,
            "schema": {"type": "string", "enum": [model.name]}}
    version = {"name": "version", "in": "path", "required": True,
               "schema": {"type": "string", "enum": list(routing.versions)}}
    json_ = "application/json"
    paths: dict[str, dict] = {}

    def op(method: str, path: str, summary: str, *, body: dict | None = None,
           errors: tuple[int, ...] = (), params: tuple[dict, ...] = (), key: bool = True,
           ok: tuple[str, ...] = (json_,), error_key: str = "detail") -> None:
        statuses = {422, *errors} | ({401} if key and keyed else set())
        responses: dict[str, Any] = {"200": _response("OK", ok)}
        for status in sorted(statuses):
            responses[str(status)] = _response(_REASONS[status], (json_,), error_key)
        if body is not None:
            responses["503"] = {"description": "the replica's queue is full: retry later"}
        operation: dict[str, Any] = {
            "summary": summary, "operationId": _operation_id(method, path),
            "parameters": [*params, _REQUEST_ID_PARAM], "responses": responses}
        if body is not None:
            operation["requestBody"] = {"required": True, "content": body}
        if key and keyed:
            operation["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[method] = operation

    def predicts(schema: dict) -> dict:
        return {json_: {"schema": schema}}

    op("post", "/predict", "mlrt: predict rows", body=predicts(predict_body()), errors=(413,))
    op("get", "/health", "200 when the model is loaded", key=False)
    op("get", "/metadata", "Name, version, alias, input schema, metrics, lineage")
    op("post", "/invocations", "MLflow scoring: predict a table",
       body={json_: {"schema": invocations_body(features)},
             "text/csv": {"schema": csv_body(features)}},
       errors=(400, 413, 415), error_key="message")
    op("get", "/ping", "MLflow scoring: 200 when the model is loaded", key=False,
       error_key="message")
    op("get", "/version", "MLflow scoring: the MLflow version it speaks", key=False,
       ok=("text/plain",), error_key="message")
    oip_errors = {"error_key": "error"}
    op("get", "/v2", "OIP: server metadata", key=False, **oip_errors)
    op("get", "/v2/health/live", "OIP: server live", key=False, **oip_errors)
    op("get", "/v2/health/ready", "OIP: server ready", key=False, **oip_errors)
    infer = predicts(infer_body(features, model.classes))
    for prefix, params in (("/v2/models/{name}", (name,)),
                           ("/v2/models/{name}/versions/{version}", (name, version))):
        op("get", prefix, "OIP: model metadata", errors=(404,), params=params, **oip_errors)
        op("get", prefix + "/ready", "OIP: model ready", errors=(404,), params=params,
           key=False, **oip_errors)
        op("post", prefix + "/infer", "OIP: inference", body=infer, params=params,
           errors=(400, 404, 413, 415), ok=(json_, "application/octet-stream"), **oip_errors)
    op("get", "/v1/models", "KServe v1: the models served", key=False, error_key="error")
    op("get", "/v1/models/{name}", "KServe v1: model status", errors=(404,), params=(name,),
       key=False, error_key="error")
    op("post", "/v1/models/{name}:predict", "KServe v1: predict", body=predicts(
        kserve_v1_body()), errors=(400, 404, 413), params=(name,), error_key="error")
    if server.args.serve.capture is not None:  # no captures, no labels: the route is a 404
        op("post", "/feedback", "Late labels by request id (stored for mlrt monitor)",
           body=predicts(feedback_body(model.classes)), errors=(413,))
    doc: dict[str, Any] = {
        "openapi": "3.1.0", "info": {"title": title, "description": description,
                                     "version": model.version},
        "paths": paths,
        "components": {"schemas": {"Row": row_object(features), "RowList": row_list(features)}}}
    if keyed:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http",
                                                            "scheme": "bearer"}}
    return json.loads(json.dumps(doc))  # plain JSON types: no tuples, no shared objects


_REQUEST_ID_PARAM = {
    "name": "x-request-id", "in": "header", "required": False,
    "description": "the client's own request id (else the server makes one); every response "
                   "names it in this header",
    "schema": {"type": "string", "pattern": "^[!-~]{1,128}$"}}
_REASONS = {400: "the body is not this protocol's format", 401: "missing or wrong API key",
            404: "another model or version than the one served",
            413: "payload above serve.max_payload_bytes", 415: "unsupported media type",
            422: "rows that do not fit the model, or a bad x-request-id header"}


def _response(description: str, media_types: tuple[str, ...], error_key: str | None = None
              ) -> dict:
    schema: dict[str, Any] = {}
    if error_key is not None:
        schema = {"type": "object", "required": [error_key],
                  "properties": {error_key: {"type": "string"}}}
    return {"description": description,
            "headers": {"x-request-id": {"required": True, "schema": {"type": "string"}},
                        "x-model-version": {"required": True, "schema": {"type": "string"}}},
            "content": {m: {"schema": schema} for m in media_types}}


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[{}]", "", path).replace(":", "_").strip("/").replace("/", "_")
    return f"{method}_{words or 'root'}"
