"""The Open Inference Protocol (KServe v2, Triton, MLServer, Seldon Core 2) over REST,
framework-free.

    GET  {route}/v2/health/live, /v2/health/ready          200 {"live"/"ready": true}
    GET  {route}/v2                                        server metadata
    GET  {route}/v2/models/{name}[/versions/{v}]           model metadata
    GET  {route}/v2/models/{name}[/versions/{v}]/ready     200 {"name", "ready": true}
    POST {route}/v2/models/{name}[/versions/{v}]/infer     inference

Anchors: the REST spec (kserve docs/predict-api/v2/required_api.md), Triton's binary tensor
data extension (docs/protocol/extension_binary_data.md), tritonclient.http (what
`InferenceServerClient` sends and reads: no Content-Type, `parameters.binary_data_output` when
no outputs are named, errors read from `{"error": ...}`), MLServer's pandas codec
(`parameters.content_type: "pd"`, one input per column, BYTES for strings) and MLServer's
scikit-learn runtime (outputs `predict` and `predict_proba`).

An infer request gives the rows in one of two forms:
- tensor: one input of shape [N, F], F the feature count, values in feature order, datatype
  FP16/FP32/FP64/INT*/UINT* (request `parameters.content_type: "np"`, or any single input
  whose name is not a feature);
- per feature: one input per feature, named exactly as the features, shape [N] or [N, 1];
  BYTES for categorical features, a numeric datatype for the others (request
  `parameters.content_type: "pd"`, or inputs whose names are all feature names).
`data` is flat row-major or nested to the shape, its length checked against the shape; a null
element (JSON) or NaN (binary FP) is a missing value, imputed where the model can. Binary inputs
(`parameters.binary_data_size` + `Inference-Header-Content-Length`) are decoded; outputs are
sent as binary when `binary_data` (per output) or `binary_data_output` (request) asks for it.
Then every row goes through the same checks as /predict (serve_apps/validate.py).

Outputs: `predict` ([N], the labels: INT64, FP64, BYTES or BOOL from the classes' type; FP64
for a regressor) and, for classifiers, `predict_proba` ([N, C] FP64, columns in class order).
`outputs` in the request picks among them (default: all); another name is a 400.

Model metadata describes the form a client would write first: a numeric model as one tensor
`input-0` [-1, F] FP64, a model with categorical features as one input per feature ([-1],
BYTES or FP64) with `parameters.content_type: "pd"`; either way `parameters.features` lists
the names in order, and both forms are accepted for every model.

Where this deviates from the spec or the anchors, and why:
- Every client error is a 400 (a value the model cannot take included, 422 on /predict), 404
  for another model name or a version not served; 401/413/503 keep their status. The spec
  says "typically 400"; one status is what OIP clients expect.
- Unknown top-level keys (`model_name`, `model_version`, a client's own) and unknown
  parameters are ignored, not refused: clients add them, and the URL names the model.
- The health endpoints answer JSON (as KServe's server does) rather than an empty body;
  clients read only the status.
- No Content-Type is required on infer (tritonclient sends none); a compressed request
  (`Content-Encoding`) is a 415: decompressing it would bypass serve.max_payload_bytes.
- BF16, shared memory (`shared_memory_region`) and Triton's classification extension are not
  supported: a 400 that says so. Integer ranges of INT8..INT32 are not checked (the values are
  features, read as float64), and an integral JSON float (3.0) is an integer, as JSON Schema
  counts them (the OpenAPI document says `integer`).
- `parameters` (of the request, an input or an output) may be null: no parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

from serve_apps.protocols import _tensors
from serve_apps.protocols._common import (
    ModelInfo,
    Reply,
    client_status,
    decode_json,
    json_reply,
    rows_from_columns,
)
from serve_apps.validate import (
    BadRequest,
    Features,
    check_names,
    kind_of,
    parse_rows,
    preview,
    shorten,
)

TENSOR_INPUT = "input-0"
PREDICT, PREDICT_PROBA = "predict", "predict_proba"
HEADER_LENGTH = "inference-header-content-length"


@dataclass(frozen=True)
class InferRequest:
    """A parsed infer request: the checked rows, and what the answer must look like."""

    rows: Any  # validate.parse_rows: a float64 matrix or a list of rows
    id: str | None
    outputs: tuple[tuple[str, bool], ...] | None  # (name, binary); None: all, as `binary`
    binary: bool  # request-level binary_data_output


def server_metadata() -> dict:
    try:
        version = metadata.version("mlrt")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"name": "mlrt", "version": version, "extensions": ["binary_tensor_data"]}


def check_model(name: str, version: str | None, model: ModelInfo,
                served_versions: tuple[str, ...]) -> None:
    """404 unless `name` (and `version`, when the URL has one) is being served here."""
    if name != model.name:
        raise BadRequest(404, f"model '{shorten(name)}' is not served here; this endpoint "
                              f"serves '{model.name}'")
    if version is not None and version not in served_versions:
        raise BadRequest(404, f"version '{shorten(version)}' of model '{name}' is not served "
                              f"here; serving version(s) {list(served_versions)}")


def model_metadata(model: ModelInfo, served_versions: tuple[str, ...]) -> dict:
    f = model.features
    if f.categorical:
        inputs = [{"name": n, "datatype": "BYTES" if n in f.categorical else "FP64",
                   "shape": [-1]} for n in f.names]
    else:
        inputs = [{"name": TENSOR_INPUT, "datatype": "FP64", "shape": [-1, len(f.names)]}]
    outputs = [{"name": PREDICT, "datatype": _label_datatype(model), "shape": [-1]}]
    if model.is_classifier:
        outputs.append({"name": PREDICT_PROBA, "datatype": "FP64",
                        "shape": [-1, len(model.classes)]})
    return {"name": model.name, "versions": list(served_versions), "platform": "mlrt",
            "inputs": inputs, "outputs": outputs,
            "parameters": {"content_type": "pd" if f.categorical else "np",
                           "features": list(f.names),
                           "nullable": [n for n in f.names if n in f.nullable]}}


def parse_infer(body: bytes, header_length: str | None, content_encoding: str | None,
                model: ModelInfo) -> InferRequest:
    """An infer body (JSON, or JSON + binary tail) -> rows and the outputs asked for.
    Raises BadRequest (400, 415)."""
    if content_encoding not in (None, "", "identity"):
        raise BadRequest(415, f"Content-Encoding '{shorten(content_encoding)}' is not "
                              "supported; send the request uncompressed")
    head, tail = _tensors.split_binary(body, header_length)
    request = decode_json(head)
    if not isinstance(request, dict):
        raise BadRequest(400, f"the body must be an inference request object, got "
                              f"{kind_of(request)}")
    rid = request.get("id")
    if rid is not None and not isinstance(rid, str):
        raise BadRequest(400, f"id must be a string, got {kind_of(rid)}")
    params = _params(request, "parameters")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, dict) for i in inputs):
        raise BadRequest(400, f"inputs must be a non-empty list of input tensors, got "
                              f"{kind_of(inputs)}")
    values = _input_values(inputs, tail)
    rows = _rows(inputs, values, params.get("content_type"), model.features)
    return InferRequest(rows, rid, _outputs(request, model), _flag(params, "binary_data_output",
                                                                    "parameters"))


def infer_reply(request: InferRequest, labels: Any, proba: Any, model: ModelInfo,
                request_id: str | None = None) -> Reply:
    """The inference response: JSON, or JSON + binary tail when binary outputs were asked for."""
    labels = np.asarray(labels)
    tensors = {PREDICT: (labels, _tensors.datatype_of(labels.dtype), [len(labels)])}
    if proba is not None:
        p = np.asarray(proba, dtype=np.float64)
        tensors[PREDICT_PROBA] = (p, "FP64", list(p.shape))
    wanted = request.outputs or tuple((n, request.binary) for n in tensors)
    outputs, tail = [], []
    for name, binary in wanted:
        values, datatype, shape = tensors[name]
        out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            chunk = _tensors.pack(values, datatype)
            out["parameters"] = {"binary_data_size": len(chunk)}
            tail.append(chunk)
        else:
            flat = values.reshape(-1)
            out["data"] = flat.astype(str).tolist() if datatype == "BYTES" else flat.tolist()
        outputs.append(out)
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    rid = request.id if request.id is not None else request_id
    if rid is not None:
        body["id"] = rid
    body["outputs"] = outputs
    reply = json_reply(body)
    if not tail:
        return reply
    return Reply(200, reply.body + b"".join(tail), "application/octet-stream",
                 {HEADER_LENGTH: str(len(reply.body))})


def error_reply(e: BadRequest, request_id: str | None = None) -> Reply:
    """Any client error on these routes as `{"error": message}` (what tritonclient reads); a
    value error is a 400, a bad request header keeps its 422. The request id travels in the
    x-request-id header only: the spec's error object has one key."""
    return json_reply({"error": e.message}, client_status(e))



def _label_datatype(model: ModelInfo) -> str:
    if not model.is_classifier:
        return "FP64"
    return _tensors.datatype_of(np.asarray(model.classes).dtype)


def _params(obj: dict, where: str) -> dict:
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(400, f"{where} must be an object, got {kind_of(params)}")
    return params


def _flag(params: dict, key: str, where: str) -> bool:
    value = params.get(key, False)
    if type(value) is not bool:
        raise BadRequest(400, f"{where}.{key} must be true or false, got {kind_of(value)}")
    return value


def _input_values(inputs: list[dict], tail: bytes) -> list[list[Any]]:
    """Each input's flat elements, from its JSON `data` or its share of the binary tail."""
    values, offset, names = [], 0, set()
    for k, tensor in enumerate(inputs):
        name = tensor.get("name")
        where = f"inputs[{k}]" + (f" '{shorten(name)}'" if isinstance(name, str) else "")
        if not isinstance(name, str) or name in names:
            raise BadRequest(400, f"{where}: name must be a string, unique among the inputs, "
                                  f"got {kind_of(name)}")
        names.add(name)
        shape = _tensors.check_shape(tensor.get("shape"), where)
        datatype = _tensors.check_datatype(tensor.get("datatype"), where)
        params = _params(tensor, f"{where}.parameters")
        if any(k.startswith("shared_memory") for k in params):
            raise BadRequest(400, f"{where}: shared memory inputs are not supported; send data")
        size = params.get("binary_data_size")
        if size is None:
            if "data" not in tensor:
                raise BadRequest(400, f"{where}: needs data (or parameters.binary_data_size)")
            values.append(_tensors.json_values(tensor["data"], shape, datatype, where))
        elif "data" in tensor:
            raise BadRequest(400, f"{where}: give data or binary_data_size, not both")
        else:
            flat, offset = _tensors.binary_values(tail, offset, size, shape, datatype, where)
            values.append(flat)
    if offset != len(tail):
        raise BadRequest(400, f"{len(tail) - offset} bytes after the JSON header belong to "
                              "no input's binary_data_size")
    return values


def _rows(inputs: list[dict], values: list[list[Any]], content_type: Any,
          features: Features) -> Any:
    names = [t["name"] for t in inputs]
    if content_type not in (None, "pd", "np"):
        raise BadRequest(400, f"parameters.content_type {kind_of(content_type)} is not "
                              "supported: 'np' (one [N, F] tensor) or 'pd' (one input per "
                              "feature)")
    per_feature = content_type == "pd" or (
        content_type is None and all(n in features.name_set for n in names))
    if per_feature:
        return _rows_per_feature(inputs, values, features)
    if len(inputs) != 1:
        raise BadRequest(400, f"inputs {preview(names)}: send one [N, {len(features.names)}] "
                              f"tensor in feature order, or one input per feature named "
                              f"{preview(features.names)}")
    return _rows_from_tensor(inputs[0], values[0], features)


def _rows_from_tensor(tensor: dict, flat: list[Any], features: Features) -> Any:
    width, shape = len(features.names), tensor["shape"]
    where = f"input '{shorten(tensor['name'])}'"
    if len(shape) != 2 or shape[1] != width:
        raise BadRequest(400, f"{where}: shape {shape} does not fit the model: expected "
                              f"[N, {width}], the features in order {preview(features.names)}")
    if shape[0] == 0:
        raise BadRequest(400, f"{where}: no rows (shape {shape})")
    rows = [flat[i * width:(i + 1) * width] for i in range(shape[0])]
    return parse_rows(rows, features, f"{where} (row {{}})", nan_is_null=True)


def _rows_per_feature(inputs: list[dict], values: list[list[Any]], features: Features) -> Any:
    check_names([t["name"] for t in inputs], features, "inputs")  # before shapes: says more
    for t in inputs:
        if len(t["shape"]) > 2 or (len(t["shape"]) == 2 and t["shape"][1] != 1):
            raise BadRequest(400, f"input '{shorten(t['name'])}': a feature's input has shape "
                                  f"[N] or [N, 1], got {t['shape']}")
    columns = {t["name"]: v for t, v in zip(inputs, values, strict=True)}
    return rows_from_columns(columns, features, "inputs", nan_is_null=True)


def _outputs(request: dict, model: ModelInfo) -> tuple[tuple[str, bool], ...] | None:
    asked = request.get("outputs")
    if asked is None or asked == []:
        return None
    known = [PREDICT, PREDICT_PROBA] if model.is_classifier else [PREDICT]
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise BadRequest(400, f"outputs must be a list of {{\"name\": ...}}, got "
                              f"{kind_of(asked)}")
    default = _flag(_params(request, "parameters"), "binary_data_output", "parameters")
    out = []
    for k, o in enumerate(asked):
        if o.get("name") not in known:
            raise BadRequest(400, f"outputs[{k}]: unknown output {kind_of(o.get('name'))}; "
                                  f"this model has {known}")
        params = _params(o, f"outputs[{k}].parameters")
        if "classification" in params:
            raise BadRequest(400, f"outputs[{k}]: the classification extension is not "
                                  f"supported; ask for '{PREDICT_PROBA}'")
        binary = _flag(params, "binary_data", f"outputs[{k}].parameters") if (
            "binary_data" in params) else default
        out.append((o["name"], binary))
    if len({n for n, _ in out}) != len(out):
        raise BadRequest(400, f"outputs name an output twice: {[n for n, _ in out]}")
    return tuple(out)
