"""Unit: the protocol adapters (MLflow scoring, KServe v1; OIP v2 in test_oip.py) -> the same
rows and checks as /predict, and each protocol's answer and error shapes. Request bodies are
built by the real clients' own serializers (mlflow's dump_input_data) where they have one; no
Ray, no HTTP."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_models import (
    LABELS,
    MIX_MODEL,
    MIXED,
    NUM_MODEL,
    NUMERIC,
    PROBA,
    REGRESSOR,
    raises,
)

from runtime.inference import Predictor
from runtime.registry.model_dir import ModelMeta
from serve_apps.protocols import kserve_v1, oip
from serve_apps.protocols import mlflow_scoring as mls
from serve_apps.validate import BadRequest, parse_rows

# --- the shared row checks ------------------------------------------------------------------

def test_parse_rows_names_rows_by_where_or_template():
    raises(422, "dataframe_records[1]: feature 'b' must be a number", parse_rows,
            [[1, 2], [1, "x"]], NUMERIC, "dataframe_records")
    raises(422, "text/csv (row 1): feature 'b' must be a number", parse_rows,
            [[1, 2], [1, "x"]], NUMERIC, "text/csv (row {})")


def test_nan_is_a_null_only_where_asked_and_only_for_nullable_features():
    nan = float("nan")
    assert parse_rows([[nan, "red"]], MIXED, nan_is_null=True) == [[None, "red"]]
    raises(422, "feature 'x' must be a finite number, got nan", parse_rows,
            [[nan, "red"]], MIXED)
    raises(422, "feature 'a' must be a finite number, got nan", parse_rows,
            [[nan, 1.0]], NUMERIC, "instances", )
    with pytest.raises(BadRequest, match="feature 'a' must be a finite number"):
        parse_rows([[nan, 1.0]], NUMERIC, nan_is_null=True)


def test_one_bad_value_gets_the_same_message_through_every_protocol():
    message = "feature 'b' must be a number, got a string \"x\""
    bodies = [
        lambda: mls.parse_invocation("application/json", json.dumps(
            {"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"]]}}).encode(), NUMERIC),
        lambda: mls.parse_invocation("text/csv", b"a,b\n1,x\n", NUMERIC),
        lambda: kserve_v1.parse_predict(json.dumps({"instances": [[1, "x"]]}).encode(), NUMERIC),
        lambda: oip.parse_infer(json.dumps({"inputs": [
            {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
            {"name": "b", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}).encode(),
            None, None, NUM_MODEL),
    ]
    for make in bodies:
        with pytest.raises(BadRequest) as e:
            make()
        assert e.value.status == 422 and e.value.message.endswith(message), e.value.message


# --- MLflow scoring ---------------------------------------------------------------------------

def _inv(body, features=NUMERIC, content_type="application/json"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return mls.parse_invocation(content_type, raw, features)


@pytest.mark.parametrize("body", [
    {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2.5], [3, 4]]}},
    {"dataframe_split": {"columns": ["b", "a"], "data": [[2.5, 1], [4, 3]], "index": [7, 8]}},
    {"dataframe_split": {"data": [[1, 2.5], [3, 4]]}},
    {"dataframe_records": [{"a": 1, "b": 2.5}, {"b": 4, "a": 3}]},
    {"instances": [[1, 2.5], {"a": 3, "b": 4}]},
    {"instances": {"a": [1, 3], "b": [2.5, 4]}},
    {"inputs": [[1, 2.5], [3, 4]]},
    {"inputs": {"b": [2.5, 4], "a": [1, 3]}, "params": {"temperature": 1}},
])
def test_every_json_format_gives_the_same_matrix(body):
    np.testing.assert_array_equal(_inv(body), [[1, 2.5], [3, 4]])


def test_the_mlflow_clients_own_bodies_parse():
    from mlflow.utils.proto_json_utils import dump_input_data

    frame = pd.DataFrame({"color": ["red", "blue"], "x": [1.5, np.nan]}, index=[10, 11])
    assert _inv(dump_input_data(frame).encode(), MIXED) == [[1.5, "red"], [None, "blue"]]
    matrix = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(_inv(dump_input_data(matrix, params={"k": 1}).encode()),
                                  matrix)


@pytest.mark.parametrize("body, status, fragment", [
    ({}, 400, "exactly one of ['dataframe_split', 'dataframe_records', 'instances', 'inputs']"),
    ({"instances": [[1, 2]], "inputs": [[1, 2]]}, 400, "exactly one of"),
    ({"data": [[1, 2]]}, 400, "got the field(s) ['data']"),
    ([[1, 2]], 400, "must be a JSON object"),
    ({"inputs": [[1, 2]], "params": [1]}, 400, "params must be an object"),
    ({"dataframe_split": [[1, 2]]}, 400, "dataframe_split must be an object with 'data'"),
    ({"dataframe_split": {"data": [[1, 2]], "extra": 1}}, 400, "optionally 'columns'"),
    ({"dataframe_split": {"data": [[1, 2]], "index": [1, 2]}}, 400, "one label per row (1)"),
    ({"dataframe_split": {"columns": ["a", "b"], "data": [[1]]}}, 400,
     "dataframe_split.data[0] must be a list of 2 values"),
    ({"dataframe_split": {"columns": ["a", "a"], "data": [[1, 2]]}}, 400, "twice"),
    ({"dataframe_split": {"columns": ["a"], "data": [[1]]}}, 422,
     "dataframe_split.data: missing feature(s) ['b']"),
    ({"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, 2, 3]]}}, 422,
     "dataframe_split.data: unknown feature name(s) ['c']"),
    ({"dataframe_split": {"columns": ["a", "b"], "data": []}}, 422, "no rows"),
    ({"dataframe_records": {"a": [1]}}, 400, "dataframe_records must be a list of records"),
    ({"dataframe_records": [{"a": 1}]}, 422, "dataframe_records[0]: missing feature(s) ['b']"),
    ({"inputs": {"a": [1, 2], "b": [1]}}, 400, "columns differ in length"),
    ({"inputs": {"a": 1, "b": 2}}, 400, "column 'a' must be a list of values"),
    ({"instances": "x"}, 400, "instances must be a list of rows or an object of columns"),
    ({"instances": []}, 422, "instances must be a non-empty list of rows"),
    ({"inputs": {"a": [1, float("inf")], "b": [1, 2]}}, 422,
     "inputs (row 1): feature 'a' must be a finite number, got inf"),
])
def test_format_errors_are_400_value_errors_422(body, status, fragment):
    raises(status, fragment, _inv, body)


def test_csv_numbers_may_have_signs_and_exponents():
    np.testing.assert_array_equal(_inv(b"a,b\n+1.,-2e3\n.5,007\n", NUMERIC, "text/csv"),
                                  [[1, -2000], [0.5, 7]])


def test_csv_with_a_header_row():
    body = b"color,x\nred,1.5\n007,\n\"a, b\",2\n"
    assert _inv(body, MIXED, "text/csv") == [[1.5, "red"], [None, "007"], [2.0, "a, b"]]
    assert _inv(body, MIXED, "text/csv; charset=UTF-8") == _inv(body, MIXED, "text/csv")
    frame = pd.DataFrame({"a": [1.0, 3.0], "b": [2.5, 4.0]}, index=[5, 6])
    np.testing.assert_array_equal(_inv(frame.to_csv().encode(), NUMERIC, "text/csv"),
                                  [[1, 2.5], [3, 4]])  # to_csv's index column is dropped


@pytest.mark.parametrize("body, status, fragment", [
    (b"", 400, "needs a header row"),
    (b"a,b\n1\n", 400, "text/csv row 0: 1 cells, the header has 2"),
    (b"a,a\n1,2\n", 400, "twice"),
    (b"a\n1\n", 422, "text/csv: missing feature(s) ['b']"),
    (b"a,b,c\n1,2,3\n", 422, "text/csv: unknown feature name(s) ['c']"),
    (b"a,b\n1,x\n", 422, "text/csv (row 0): feature 'b' must be a number, got a string \"x\""),
    (b"a,b\n1,\n", 422, "text/csv (row 0): feature 'b' is null"),
    (b"a,b\n", 422, "no rows"),
    (b"a,b\n\xff,1\n", 400, "not UTF-8"),
    # only decimal numbers: float() would also take these
    (b"a,b\n1, 2\n", 422, "feature 'b' must be a number, got a string \" 2\""),
    (b"a,b\n1,1_0\n", 422, "feature 'b' must be a number"),
    (b"a,b\n1,inf\n", 422, "feature 'b' must be a number"),
])
def test_csv_errors(body, status, fragment):
    raises(status, fragment, _inv, body, NUMERIC, "text/csv")


@pytest.mark.parametrize("content_type", [
    None, "application/x-www-form-urlencoded", "application/vnd.apache.parquet",
    "text/csv; charset=latin-1", "application/json; format=pandas-split"])
def test_other_media_types_are_415(content_type):
    raises(415, "", _inv, {"inputs": [[1, 2]]}, NUMERIC, content_type)


def test_invocation_answer_is_mlflow_pyfuncs_frame_as_records():
    reply = mls.invocation_reply(LABELS, PROBA, NUM_MODEL, "r1")
    body = reply.json()
    assert reply.status == 200 and reply.media_type == "application/json"
    assert body["predictions"] == [{"prediction": 1, "probability_0": 0.25, "probability_1": 0.75},
                                   {"prediction": 0, "probability_0": 0.9, "probability_1": 0.1}]
    assert body["model"] == {"name": "num", "version": "3"} and body["request_id"] == "r1"
    # the same columns as the registered pyfunc's output (what `mlflow models serve` answers)
    meta = ModelMeta(framework="sklearn", task="classification", classes=[0, 1],
                     features=("a", "b"), target="y")
    pyfunc = Predictor(meta=meta, state=None, model=None)
    expected = pd.DataFrame(pyfunc.output_columns(LABELS, PROBA))
    pd.testing.assert_frame_equal(pd.DataFrame(body["predictions"]), expected)
    assert mls.invocation_reply(np.array([1.5]), None, REGRESSOR).json()["predictions"] == [
        {"prediction": 1.5}]


def test_mlflow_error_shapes_and_version():
    bad = mls.error_reply(BadRequest(400, "no format"))
    assert bad.status == 400 and bad.json() == {"error_code": "BAD_REQUEST", "message": "no format"}
    value = mls.error_reply(BadRequest(422, "inputs[0]: ..."))
    assert value.status == 422 and value.json() == {
        "error_code": "INVALID_PARAMETER_VALUE", "message": "inputs[0]: ...",
        "detail": "inputs[0]: ..."}
    assert mls.error_reply(BadRequest(401, "key")).json()["error_code"] == "UNAUTHENTICATED"
    version = mls.version_reply()
    assert version.media_type == "text/plain" and version.body.decode().count(".") >= 1


# --- KServe v1 --------------------------------------------------------------------------------

def test_kserve_v1_instances_or_inputs():
    for body in ({"instances": [[1, 2.5], [3, 4]]}, {"inputs": [[1, 2.5], [3, 4]]},
                 {"inputs": {"a": [1, 3], "b": [2.5, 4]}, "signature_name": "serving_default"}):
        np.testing.assert_array_equal(
            kserve_v1.parse_predict(json.dumps(body).encode(), NUMERIC), [[1, 2.5], [3, 4]])
    raises(400, "exactly one of 'instances' and 'inputs'", kserve_v1.parse_predict,
            b'{"instances": [[1, 2]], "inputs": [[1, 2]]}', NUMERIC)
    raises(400, "exactly one of", kserve_v1.parse_predict, b'{"rows": []}', NUMERIC)
    raises(400, "body is not valid JSON", kserve_v1.parse_predict, b"{", NUMERIC)
    e = raises(422, "instances[0]: missing feature(s) ['b']", kserve_v1.parse_predict,
                b'{"instances": [{"a": 1}]}', NUMERIC)
    assert kserve_v1.error_reply(e).status == 400
    assert kserve_v1.error_reply(e).json() == {"error": e.message}


def test_kserve_v1_answers_and_model_status():
    body = kserve_v1.predict_reply(LABELS, PROBA, NUM_MODEL, "r").json()
    assert body == {"predictions": [1, 0], "probabilities": PROBA.tolist(),
                    "model": {"name": "num", "version": "3"}, "request_id": "r"}
    assert kserve_v1.model_status("num", NUM_MODEL) == {"name": "num", "ready": True}
    assert kserve_v1.models_list(NUM_MODEL) == {"models": ["num"]}
    e = raises(404, "Model with name other does not exist", kserve_v1.model_status, "other",
                NUM_MODEL)
    assert kserve_v1.error_reply(e).status == 404


# --- never a 500 ------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["a", "b", "x", "color", "name", "shape", "datatype", "data", "columns",
                         "index", "parameters", "binary_data_size", "content_type"]), inner,
        max_size=4),
    max_leaves=20)
_ENVELOPES = st.fixed_dictionaries({}, optional={
    k: _JSON for k in ("dataframe_split", "dataframe_records", "instances", "inputs", "params",
                       "id", "outputs", "parameters")})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_ENVELOPES | _JSON, model=st.sampled_from([NUM_MODEL, MIX_MODEL]),
       tail=st.binary(max_size=16))
def test_any_json_is_an_answer_or_a_client_error(body, model, tail):
    raw = json.dumps(body).encode()
    calls = [lambda: mls.parse_invocation("application/json", raw, model.features),
             lambda: kserve_v1.parse_predict(raw, model.features),
             lambda: oip.parse_infer(raw, None, None, model),
             lambda: oip.parse_infer(raw + tail, str(len(raw)), None, model)]
    for call in calls:
        try:
            call()
        except BadRequest as e:
            assert e.status in (400, 415, 422), e.message


@settings(max_examples=200, deadline=None)
@given(text=st.lists(st.sampled_from([*'ab,x"\n\r 1.5e-', "color", "\ufeff", "nan"]),
                    max_size=30).map("".join))
def test_any_csv_is_rows_or_a_client_error(text):
    for features in (NUMERIC, MIXED):
        try:
            mls.parse_invocation("text/csv", text.encode(), features)
        except BadRequest as e:
            assert e.status in (400, 422), e.message
