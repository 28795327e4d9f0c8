"""MLflow's scoring protocol (what `mlflow models serve` answers), framework-free.

    POST {route}/invocations     application/json or text/csv -> {"predictions": [...]}
    GET  {route}/ping, /health   200 while the model is loaded
    GET  {route}/version         the MLflow version, as text

Anchor: mlflow/pyfunc/scoring_server/__init__.py of MLflow 3.x (`invocations`,
`_split_data_and_params`, `infer_and_parse_data`, `parse_csv_input`, `predictions_to_json`) and
its client, scoring_server/client.py (`ScoringServerClient`: /ping, /version, /invocations;
`invoke(frame)` sends `{"dataframe_split": frame.to_dict(orient="split")}`, index included).

A JSON body is an object holding exactly one of
    dataframe_split    {"columns"?: [...], "data": [[...], ...], "index"?: [...]} (pandas
                       orient="split"); columns in any order, by name; without columns the
                       values are in feature order; the index is checked for length, not used
    dataframe_records  [{"feature": value, ...}, ...]
    instances          [row, ...] (lists in feature order or objects), or {"feature": [...]}
    inputs             the same: a list of rows, or a dict of columns
and optionally `params`: must be an object, then accepted and ignored (an mlrt model takes no
inference parameters; MLflow does the same for a model without a params schema: it warns and
ignores them). Other top-level keys are ignored, as MLflow's `_split_data_and_params` does.
A `text/csv` body has a header row with the feature names; categorical features stay strings,
numeric cells are decimal numbers (`-1.5`, `2e3`; not ` 1`, `1_000`, `inf` or `nan`, which
Python's float() would take), an empty cell is a null.

The answer is MLflow's for the same registered version: `predictions` holds one record per row
in the columns of mlflow.pyfunc's output frame (`prediction`, then `probability_<class>` for
classifiers), exactly what `mlflow models serve` of that version answers; mlrt adds `model`
(name, version) and `request_id`.

Errors: 400 `{"error_code": "BAD_REQUEST", "message": ...}` for a body that is not one of these
formats; 422 (mlrt's row checks, serve_apps/validate.py) where a value is wrong, with the same
message under both `message` and `detail` (mlrt's own error key), `error_code`
`INVALID_PARAMETER_VALUE`; 415 for other media types; 401/413/503 from the route keep their
status with MLflow's error shape.

Where this deviates from MLflow, and why:
- Every error is JSON; MLflow answers 415 in text/plain. mlrt's HTTP contract is JSON errors.
- Value errors are 422 with mlrt's row-and-feature message; MLflow answers 400 with a pandas or
  schema-enforcement message. Format errors are all `BAD_REQUEST` (MLflow uses
  `INVALID_PARAMETER_VALUE` for some, e.g. invalid JSON); both are 400 there.
- A column the model does not take is refused (422) in every format; MLflow's schema enforcement
  drops it with a warning. A misspelt feature would otherwise vanish silently. The one exception:
  a CSV whose first header cell is empty (`DataFrame.to_csv()` writing its index) has that
  column dropped, as the index it is.
- An empty table (no rows) is a 422, as on /predict; MLflow predicts nothing and answers [].
- NaN in any format is a missing value (pandas clients send NaN for null): imputed for a
  nullable feature, refused (non-finite) for the others. On /predict a NaN is always refused.
- `application/vnd.apache.parquet` (MLflow 3) is a 415: a few kilobytes of parquet can
  decompress into far more rows than serve.max_payload_bytes allows, and the limit is the point.
- MLflow's "unified LLM" unwrapped bodies (`messages`, `prompt`) are not a format here (no such
  models): 400 asking for one of the four keys.
- /ping and /health answer mlrt's health JSON, not MLflow's "\\n" (clients read the status);
  /version answers text/plain (MLflow labels its version string application/json).
"""

from __future__ import annotations

import csv
import io
import re
from importlib import metadata
from typing import Any

import numpy as np

from serve_apps.protocols._common import (
    ModelInfo,
    Reply,
    decode_json,
    json_reply,
    label_records,
    rows_from_columns,
    split_media_type,
)
from serve_apps.validate import BadRequest, Features, kind_of, parse_rows, preview, shorten

# a CSV number: sign, digits with an optional fraction, an optional exponent; nothing else
_DECIMAL = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CSV = "text/csv"
JSON = "application/json"
_ERROR_CODES = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 404: "RESOURCE_DOES_NOT_EXIST",
                413: "BAD_REQUEST", 415: "BAD_REQUEST", 422: "INVALID_PARAMETER_VALUE",
                503: "TEMPORARILY_UNAVAILABLE"}


def parse_invocation(content_type: str | None, body: bytes,
                     features: Features) -> np.ndarray | list[list[Any]]:
    """A POST /invocations body -> checked rows in feature order (validate.parse_rows).
    Raises BadRequest: 415 media type, 400 format, 422 values."""
    mime, params = split_media_type(content_type)
    charset = params.pop("charset", "utf-8")
    if mime not in (JSON, CSV):
        raise BadRequest(415, f"unsupported media type '{shorten(content_type)}'; send "
                              f"'{JSON}' (one of {list(FORMATS)}) or '{CSV}' with a header row")
    if charset != "utf-8" or params:
        raise BadRequest(415, f"unsupported media type parameters in '{shorten(content_type)}'; "
                              "only charset=utf-8 is read")
    if mime == CSV:
        return _rows_from_csv(body, features)
    return _rows_from_json(decode_json(body), features)


def invocation_reply(labels: Any, proba: Any, model: ModelInfo,
                     request_id: str | None = None) -> Reply:
    """MLflow's answer for these predictions: `{"predictions": [record, ...], ...}`."""
    out: dict[str, Any] = {"predictions": label_records(labels, proba, model),
                           "model": {"name": model.name, "version": model.version}}
    if request_id is not None:
        out["request_id"] = request_id
    return json_reply(out)


def error_reply(e: BadRequest, request_id: str | None = None) -> Reply:
    """Any client error on these routes in MLflow's shape (`error_code`, `message`), with
    mlrt's `request_id`."""
    body = {"error_code": _ERROR_CODES.get(e.status, "INTERNAL_ERROR"), "message": e.message}
    if e.status == 422:
        body["detail"] = e.message
    if request_id is not None:
        body["request_id"] = request_id
    return json_reply(body, e.status)


def version_reply() -> Reply:
    """GET /version: the MLflow version whose protocol this speaks (ScoringServerClient
    .get_version returns the text)."""
    return Reply(200, metadata.version("mlflow").encode(), "text/plain")


def _rows_from_json(data: Any, features: Features) -> np.ndarray | list[list[Any]]:
    if not isinstance(data, dict):
        raise BadRequest(400, f"the body must be a JSON object with exactly one of "
                              f"{list(FORMATS)}, got {kind_of(data)}")
    given = [k for k in FORMATS if k in data]
    if len(given) != 1:
        raise BadRequest(400, f"the body must hold exactly one of {list(FORMATS)}; "
                              f"got the field(s) {preview(data)}")
    if "params" in data and not isinstance(data["params"], dict):
        raise BadRequest(400, f"params must be an object, got {kind_of(data['params'])}")
    key = given[0]
    value = data[key]
    if key == "dataframe_split":
        return _rows_from_split(value, features)
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise BadRequest(400, "dataframe_records must be a list of records "
                                  f"[{{feature: value}}, ...], got {kind_of(value)}")
        return parse_rows(value, features, key, nan_is_null=True)
    if isinstance(value, dict):  # instances / inputs as columns
        return rows_from_columns(value, features, key, nan_is_null=True)
    if not isinstance(value, list):
        raise BadRequest(400, f"{key} must be a list of rows or an object of columns, got "
                              f"{kind_of(value)}")
    return parse_rows(value, features, key, nan_is_null=True)


def _rows_from_split(split: Any, features: Features) -> np.ndarray | list[list[Any]]:
    where = "dataframe_split"
    if not isinstance(split, dict) or "data" not in split or set(split) - {
            "columns", "data", "index"}:
        raise BadRequest(400, f"{where} must be an object with 'data' and optionally "
                              f"'columns' and 'index', got {kind_of(split)}")
    data, columns, index = split["data"], split.get("columns"), split.get("index")
    if not isinstance(data, list):
        raise BadRequest(400, f"{where}.data must be a list of rows, got {kind_of(data)}")
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        raise BadRequest(400, f"{where}.index must be a list of one label per row "
                              f"({len(data)}), got {kind_of(index)}")
    if columns is None:  # values in feature order
        return parse_rows(data, features, f"{where}.data", nan_is_null=True)
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise BadRequest(400, f"{where}.columns must be a list of feature names, got "
                              f"{kind_of(columns)}")
    if len(set(columns)) != len(columns):
        raise BadRequest(400, f"{where}.columns name a column twice: {preview(columns)}")
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise BadRequest(400, f"{where}.data[{i}] must be a list of {len(columns)} values "
                                  f"(one per column), got {kind_of(row)}")
    if tuple(columns) == features.names and data:  # what clients send: no transposing
        return parse_rows(data, features, f"{where}.data (row {{}})", nan_is_null=True)
    return rows_from_columns({c: [row[j] for row in data] for j, c in enumerate(columns)},
                             features, f"{where}.data", nan_is_null=True)


def _rows_from_csv(body: bytes, features: Features) -> np.ndarray | list[list[Any]]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadRequest(400, f"text/csv body is not UTF-8: {shorten(e)}") from None
    try:
        lines = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    except csv.Error as e:
        raise BadRequest(400, f"text/csv body is not CSV: {shorten(e)}") from None
    if not lines:
        raise BadRequest(400, "text/csv body needs a header row with the feature names")
    header, rows = lines[0], lines[1:]
    keep = list(range(1, len(header))) if header[0] == "" else list(range(len(header)))
    names = [header[j] for j in keep]  # an empty first name: the index to_csv() writes
    if len(set(names)) != len(names):
        raise BadRequest(400, f"text/csv header names a column twice: {preview(names)}")
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise BadRequest(400, f"text/csv row {i}: {len(row)} cells, the header has "
                                  f"{len(header)}")
    columns = {name: [_cell(row[j], name, i, features) for i, row in enumerate(rows)]
               for j, name in zip(keep, names, strict=True)}
    return rows_from_columns(columns, features, "text/csv", nan_is_null=True)


def _cell(text: str, name: str, i: int, features: Features) -> Any:
    if text == "":
        return None
    if name in features.categorical or name not in features.name_set:
        return text  # unknown names are reported once, by the header check
    if not _DECIMAL.fullmatch(text):  # float() would also take " 1", "1_0", "inf", "nan"
        raise BadRequest(422, f"text/csv (row {i}): feature '{name}' must be a number, got "
                              f"{kind_of(text)}")
    return float(text)
