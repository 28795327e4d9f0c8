"""Unit: the Open Inference Protocol v2 adapter -> the same rows and checks as /predict, tensors
(JSON and binary), outputs and error shapes. Request bodies are built by tritonclient's own
serializer (generate_request_body) where it has one; no Ray, no HTTP."""

from __future__ import annotations

import json

import numpy as np
import pytest
from protocol_models import LABELS, MIX_MODEL, NUM_MODEL, PROBA, REGRESSOR, raises
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

from serve_apps.protocols import oip
from serve_apps.validate import BadRequest

# --- Open Inference Protocol v2 ---------------------------------------------------------------

def _infer(request, model=NUM_MODEL, header_length=None, encoding=None):
    raw = request if isinstance(request, bytes) else json.dumps(request).encode()
    return oip.parse_infer(raw, header_length, encoding, model)


def _tensor(data, shape, datatype="FP64", name="input-0", **extra):
    return {"name": name, "shape": shape, "datatype": datatype, "data": data, **extra}


@pytest.mark.parametrize("tensor", [
    _tensor([1, 2.5, 3, 4], [2, 2]),
    _tensor([[1, 2.5], [3, 4]], [2, 2], "FP32"),
    _tensor([[1, 2.5], [3, 4]], [2, 2], name="anything"),
])
def test_one_tensor_in_feature_order(tensor):
    parsed = _infer({"id": "q", "model_name": "num", "parameters": {"x": 1}, "inputs": [tensor]})
    np.testing.assert_array_equal(parsed.rows, [[1, 2.5], [3, 4]])
    assert parsed.id == "q" and parsed.outputs is None and parsed.binary is False


def test_one_input_per_feature_with_bytes_for_categoricals():
    inputs = [_tensor(["red", "blue"], [2, 1], "BYTES", "color"),
              _tensor([1.5, None], [2], "FP32", "x")]
    assert _infer({"inputs": inputs}, MIX_MODEL).rows == [[1.5, "red"], [None, "blue"]]
    pd_request = {"parameters": {"content_type": "pd"}, "inputs": inputs}
    assert _infer(pd_request, MIX_MODEL).rows == [[1.5, "red"], [None, "blue"]]
    numeric = [_tensor([2, 4], [2], "INT64", "b"), _tensor([1, 3], [2], "INT32", "a")]
    np.testing.assert_array_equal(_infer({"inputs": numeric}).rows, [[1, 2], [3, 4]])


@pytest.mark.parametrize("request_, status, fragment", [
    ([1], 400, "inference request object"),
    ({"inputs": []}, 400, "inputs must be a non-empty list"),
    ({"id": 5, "inputs": [_tensor([1, 2], [1, 2])]}, 400, "id must be a string"),
    ({"inputs": [_tensor([1, 2, 3], [2, 2])]}, 400, "shape [2, 2] holds 4 elements, data has 3"),
    ({"inputs": [_tensor([[1, 2], [3]], [2, 2])]}, 400, "nested data does not match the shape"),
    ({"inputs": [_tensor([1, 2, 3], [1, 3])]}, 400, "shape [1, 3] does not fit the model: "
                                                     "expected [N, 2]"),
    ({"inputs": [_tensor([], [0, 2])]}, 400, "no rows"),
    ({"inputs": [_tensor([1, 2], [1, 2], "BF16")]}, 400, "datatype must be one of"),
    ({"inputs": [_tensor([1, 2], [-1, 2])]}, 400, "shape must be a list of non-negative"),
    ({"inputs": [_tensor(["1", "2"], [1, 2], "FP64")]}, 400,
     "FP64 data must be numbers, got a string \"1\" at element 0"),
    ({"inputs": [_tensor([1.5, 2], [1, 2], "INT64")]}, 400, "INT64 data must be integers"),
    ({"inputs": [_tensor([-1.0, 2], [1, 2], "UINT8")]}, 400, "UINT8 data must be non-negative"),
    ({"inputs": [_tensor([1, 2], [1, 2], "FP64", "p"), _tensor([1], [1], "FP64", "q")]}, 400,
     "send one [N, 2] tensor in feature order, or one input per feature"),
    ({"inputs": [_tensor([1], [1], name="a"), _tensor([1], [1], name="a")]}, 400, "unique"),
    ({"inputs": [_tensor([1], [1], name="a")]}, 422, "inputs: missing feature(s) ['b']"),
    ({"inputs": [_tensor([1, 2], [2], name="a"), _tensor([1], [1], name="b")]}, 400,
     "columns differ in length"),
    ({"inputs": [_tensor([1, 2], [1, 2], name="a"), _tensor([1], [1], name="b")]}, 400,
     "a feature's input has shape [N] or [N, 1]"),
    ({"parameters": {"content_type": "pd"}, "inputs": [_tensor([1, 2], [1, 2])]}, 422,
     "inputs: unknown feature name(s) ['input-0']"),
    ({"parameters": {"content_type": "str"}, "inputs": [_tensor([1, 2], [1, 2])]}, 400,
     "content_type a string \"str\" is not supported"),
    ({"inputs": [_tensor([1, float("inf")], [1, 2])]}, 422,
     "input 'input-0' (row 0): feature 'b' must be a finite number, got inf"),
    ({"inputs": [_tensor([1, 2], [1, 2], parameters={"shared_memory_region": "r"})]}, 400,
     "shared memory"),
    ({"inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP64"}]}, 400, "needs data"),
    ({"inputs": [_tensor([1, 2], [1, 2])], "outputs": [{"name": "labels"}]}, 400,
     "unknown output a string \"labels\"; this model has ['predict', 'predict_proba']"),
    ({"inputs": [_tensor([1, 2], [1, 2])], "outputs": [{"name": "predict"}] * 2}, 400, "twice"),
    ({"inputs": [_tensor([1, 2], [1, 2])], "parameters": {"binary_data_output": "yes"}}, 400,
     "binary_data_output must be true or false"),
])
def test_infer_errors_name_the_input(request_, status, fragment):
    raises(status, fragment, _infer, request_)


def test_regressor_has_no_predict_proba():
    raises(400, "this model has ['predict']", _infer,
            {"inputs": [_tensor([1, 2], [1, 2])], "outputs": [{"name": "predict_proba"}]},
            REGRESSOR)


def test_infer_answer_shapes_datatypes_and_outputs_asked_for():
    parsed = _infer({"inputs": [_tensor([1, 2, 3, 4], [2, 2])]})
    body = oip.infer_reply(parsed, LABELS, PROBA, NUM_MODEL, "mlrt-id").json()
    assert body["model_name"] == "num" and body["model_version"] == "3"
    assert body["id"] == "mlrt-id"
    assert body["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [2], "data": [1, 0]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [2, 2],
         "data": [0.25, 0.75, 0.9, 0.1]}]
    only = _infer({"id": "mine", "inputs": [_tensor([1, 2], [1, 2])],
                   "outputs": [{"name": "predict_proba"}]})
    body = oip.infer_reply(only, LABELS[:1], PROBA[:1], NUM_MODEL, "mlrt-id").json()
    assert body["id"] == "mine" and [o["name"] for o in body["outputs"]] == ["predict_proba"]
    strings = oip.infer_reply(parsed, np.array(["red", "blue"]), PROBA, MIX_MODEL).json()
    assert strings["outputs"][0] == {"name": "predict", "datatype": "BYTES", "shape": [2],
                                     "data": ["red", "blue"]}
    reg = oip.infer_reply(parsed, np.array([0.5, 1.5], dtype=np.float32), None, REGRESSOR)
    assert reg.json()["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [2],
                                      "data": [0.5, 1.5]}]


def _triton_request(inputs, outputs=None, **kw):
    body, json_size = InferenceServerClient.generate_request_body(inputs, outputs=outputs, **kw)
    return body, None if json_size is None else str(json_size)


def _triton_result(reply):
    length = reply.headers.get(oip.HEADER_LENGTH)
    return InferenceServerClient.parse_response_body(
        reply.body, header_length=None if length is None else int(length))


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_numeric_tensor_round_trip(binary):
    x = np.array([[1.0, 2.5], [3.0, 4.0]], dtype=np.float32)
    tensor = InferInput("input-0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    body, length = _triton_request([tensor], request_id="t1")  # no outputs: binary answer asked
    parsed = oip.parse_infer(body, length, None, NUM_MODEL)
    np.testing.assert_array_equal(parsed.rows, x.astype(np.float64))
    assert parsed.binary is True and parsed.id == "t1"
    reply = oip.infer_reply(parsed, LABELS, PROBA, NUM_MODEL)
    assert reply.media_type == "application/octet-stream"
    result = _triton_result(reply)
    np.testing.assert_array_equal(result.as_numpy("predict"), LABELS)
    np.testing.assert_array_equal(result.as_numpy("predict_proba"), PROBA)
    assert result.get_response()["id"] == "t1"


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_bytes_per_feature_inputs_and_outputs(binary):
    color = InferInput("color", [2, 1], "BYTES")
    color.set_data_from_numpy(np.array([[b"red"], ["blü".encode()]], dtype=object),
                              binary_data=binary)
    x = InferInput("x", [2], "FP64")
    x.set_data_from_numpy(np.array([1.5, np.nan]), binary_data=True)  # NaN: a missing value
    outputs = [InferRequestedOutput("predict", binary_data=binary),
               InferRequestedOutput("predict_proba", binary_data=not binary)]
    body, length = _triton_request([color, x], outputs)
    parsed = oip.parse_infer(body, length, None, MIX_MODEL)
    assert parsed.rows == [[1.5, "red"], [None, "blü"]]
    reply = oip.infer_reply(parsed, np.array(["red", "blue"]), PROBA, MIX_MODEL)
    result = _triton_result(reply)
    # tritonclient gives BYTES as bytes from binary data, as str from JSON
    assert [v.decode() if binary else v for v in result.as_numpy("predict")] == ["red", "blue"]
    np.testing.assert_array_equal(result.as_numpy("predict_proba"), PROBA)


def test_binary_tail_errors_are_400():
    x = InferInput("input-0", [1, 2], "FP64")
    x.set_data_from_numpy(np.array([[1.0, 2.0]]), binary_data=True)
    body, length = _triton_request([x])
    raises(400, "Inference-Header-Content-Length must be", oip.parse_infer, body, "abc", None,
            NUM_MODEL)
    raises(400, "does not fit the 0 bytes left", oip.parse_infer, body[:int(length)], length,
            None, NUM_MODEL)
    raises(400, "belong to no input", oip.parse_infer, body + b"\0", length, None, NUM_MODEL)
    raises(400, "2 FP64 elements take 16 bytes, binary_data_size is 8", oip.parse_infer,
            body.replace(b'"binary_data_size":16', b'"binary_data_size":8 ')[:-8], length,
            None, NUM_MODEL)
    raises(415, "Content-Encoding 'gzip'", oip.parse_infer, body, length, "gzip", NUM_MODEL)
    strings = InferInput("color", [1], "BYTES")
    strings.set_data_from_numpy(np.array([b"\xff"], dtype=object), binary_data=True)
    x1 = InferInput("x", [1], "FP64")
    x1.set_data_from_numpy(np.array([1.0]), binary_data=False)
    raises(400, "BYTES element 0 is not UTF-8", oip.parse_infer,
            *_triton_request([strings, x1]), None, MIX_MODEL)


def test_model_metadata_describes_the_form_a_client_writes_first():
    numeric = oip.model_metadata(NUM_MODEL, ("3",))
    assert numeric["name"] == "num" and numeric["versions"] == ["3"]
    assert numeric["platform"] == "mlrt"
    assert numeric["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 2]}]
    assert numeric["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]},
                                  {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]}]
    mixed = oip.model_metadata(MIX_MODEL, ("7", "8"))
    assert mixed["inputs"] == [{"name": "x", "datatype": "FP64", "shape": [-1]},
                               {"name": "color", "datatype": "BYTES", "shape": [-1]}]
    assert mixed["parameters"] == {"content_type": "pd", "features": ["x", "color"],
                                   "nullable": ["x"]}
    assert mixed["outputs"][0]["datatype"] == "BYTES"
    assert oip.model_metadata(REGRESSOR, ("1",))["outputs"] == [
        {"name": "predict", "datatype": "FP64", "shape": [-1]}]
    assert oip.server_metadata()["extensions"] == ["binary_tensor_data"]


def test_other_models_and_versions_are_404_as_error_objects():
    oip.check_model("num", None, NUM_MODEL, ("3",))
    oip.check_model("num", "3", NUM_MODEL, ("3", "4"))
    e = raises(404, "model 'other' is not served here; this endpoint serves 'num'",
                oip.check_model, "other", None, NUM_MODEL, ("3",))
    assert oip.error_reply(e).status == 404 and oip.error_reply(e).json() == {"error": e.message}
    raises(404, "version '9' of model 'num' is not served here; serving version(s) ['3']",
            oip.check_model, "num", "9", NUM_MODEL, ("3",))
    assert oip.error_reply(BadRequest(422, "row")).status == 400
    assert oip.error_reply(BadRequest(413, "big")).status == 413



def test_names_with_braces_are_named_not_formatted():
    raises(422, "input 'a{b}{}' (row 0): feature 'b' must be a finite number",
            _infer, {"inputs": [_tensor([1, float("inf")], [1, 2], name="a{b}{}")]})


def test_integral_floats_are_integers():
    """As JSON Schema counts integers (the OpenAPI document says `integer`)."""
    np.testing.assert_array_equal(_infer({"inputs": [_tensor([1.0, 2], [1, 2], "INT32")]}).rows,
                                  [[1, 2]])
