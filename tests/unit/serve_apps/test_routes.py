"""Unit: the replica's routes over a stand-in for the Ray replica (the real ModelServer needs
Serve and a registry; tests/integration/test_protocol_clients.py runs that one): the route
helper's request ids, auth, size limit and error shapes on every protocol, and an OpenAPI
document that validates the bodies the server accepts. No Ray."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from fastapi.testclient import TestClient

from runtime.spec import Serve
from serve_apps import openapi
from serve_apps.config import AppArgs
from serve_apps.predictor import check_key
from serve_apps.routes import build_fastapi, request_id
from serve_apps.routing import Loaded, Routing
from serve_apps.validate import BadRequest, Features

NUMERIC = Features(("a", "b"), frozenset(), frozenset())
MIXED = Features(("x", "color"), frozenset({"color"}), frozenset({"x"}))


class _Model:
    """A classifier that says 1 when the first feature is positive."""

    classes = [0, 1]


class FakeServer:
    """What the routes use of serve_apps.predictor.ModelServer, without Ray."""

    def __init__(self, features: Features = NUMERIC, key: str | None = None, **serve):
        self.routing = Routing(Loaded("num", "3", _Model(), features), "champion")
        auth = {"api_key_env": "K"} if key else None
        self.args = AppArgs(model_uri="models:/num@champion",
                            serve=Serve(route="/num", auth=auth, **serve))
        self._key = key
        self.records: list[tuple[str, int]] = []
        self.predicted: list[str] = []  # request ids seen by the prediction hook

    def check_key(self, header: str | None) -> None:
        check_key(self._key, header)

    async def predict_rows(self, loaded, rows, request_id, started):
        first = np.array([0.0 if r[0] is None else float(r[0]) for r in rows])
        labels = (first > 0).astype(int)
        self.predicted.append(request_id)
        return labels, np.stack([1.0 - labels, labels.astype(float)], axis=1)

    def record(self, loaded, protocol, status, started) -> None:
        self.records.append((protocol, status))

    def metadata(self) -> dict:
        return {"name": "num", "version": "3"}


def _client(serve_ids: bool = True, **options) -> tuple[TestClient, FakeServer]:
    """The app as Serve runs it: behind Serve's own request-id middleware (it passes a
    client's x-request-id on or sets a new one, and echoes it in the response)."""
    from ray.serve._private.http_util import RequestIdMiddleware

    server = FakeServer(**options)
    app = build_fastapi(server)
    return TestClient(RequestIdMiddleware(app) if serve_ids else app,
                      raise_server_exceptions=False), server


# --- request ids ------------------------------------------------------------------------------

@pytest.mark.parametrize("given", ["abc", "r-1_2.3:4/5", "x" * 128, "!~"])
def test_a_sane_client_id_is_kept(given):
    assert request_id(given) == given


@pytest.mark.parametrize("given", ["", "has space", "x" * 129, "caf\u00e9", "tab\there"])
def test_a_bad_client_id_is_a_422_naming_the_header(given):
    with pytest.raises(BadRequest) as e:
        request_id(given)
    assert e.value.status == 422 and "x-request-id" in e.value.message


def test_every_protocol_names_the_request_id_in_header_and_body():
    client, server = _client()
    rows = [[1, 2], [-1, 0]]
    calls = {
        "predict": ("/predict", {"instances": rows}),
        "mlflow": ("/invocations", {"dataframe_split": {"columns": ["a", "b"], "data": rows}}),
        "kserve_v1": ("/v1/models/num:predict", {"instances": rows}),
        "oip": ("/v2/models/num/infer",
                {"inputs": [{"name": "t", "shape": [2, 2], "datatype": "FP64",
                             "data": [1, 2, -1, 0]}]}),
    }
    for protocol, (path, body) in calls.items():
        own = client.post(path, json=body, headers={"x-request-id": f"mine-{protocol}"})
        made = client.post(path, json=body)
        assert own.status_code == made.status_code == 200, own.text
        assert own.headers["x-request-id"] == f"mine-{protocol}"  # once: Serve echoes it
        assert len(made.headers["x-request-id"]) == 36  # Serve's UUID4
        assert own.headers["x-model-version"] == "3"
        key = "id" if protocol == "oip" else "request_id"
        assert own.json()[key] == f"mine-{protocol}", protocol
        assert made.json()[key] == made.headers["x-request-id"], protocol
    assert server.predicted.count("mine-oip") == 1
    assert [p for p, _ in server.records] == [p for p in calls for _ in (1, 2)]


def test_an_oip_body_id_is_echoed_and_the_header_names_the_request():
    client, server = _client()
    body = {"id": "triton-7", "inputs": [{"name": "t", "shape": [1, 2], "datatype": "FP64",
                                          "data": [1, 2]}]}
    r = client.post("/v2/models/num/infer", json=body, headers={"x-request-id": "h"})
    assert r.headers["x-request-id"] == "h" and r.json()["id"] == "triton-7"
    assert server.predicted == ["h"]


def test_outside_serve_a_request_without_an_id_gets_one_in_the_header():
    client, server = _client(serve_ids=False)
    r = client.post("/predict", json={"instances": [[1, 2]]})
    assert r.headers["x-request-id"] == r.json()["request_id"] == server.predicted[0]
    given = client.post("/predict", json={"instances": [[1, 2]]}, headers={"x-request-id": "g"})
    assert given.json()["request_id"] == "g"


@pytest.mark.parametrize("path, key", [("/predict", "detail"), ("/invocations", "message"),
                                       ("/v1/models/num:predict", "error"),
                                       ("/v2/models/num/infer", "error"), ("/health", "detail"),
                                       ("/v2/health/ready", "error"),
                                       ("/feedback", "detail")])
def test_a_bad_client_id_is_a_422_on_every_route(path, key):
    client, _ = _client()
    method = client.get if "health" in path else client.post
    r = method(path, headers={"x-request-id": "a b"})
    assert r.status_code == 422 and "x-request-id" in r.json()[key]
    assert "request_id" not in r.json()  # it has none; Serve echoes the header as sent


# --- the helper: key, limit, errors -----------------------------------------------------------

def test_key_and_payload_limit_on_every_protocol_in_its_error_shape():
    client, server = _client(key="s3cret", max_payload_bytes=200)
    auth = {"authorization": "Bearer s3cret"}
    for path, key in (("/predict", "detail"), ("/invocations", "message"),
                      ("/v2/models/num/infer", "error"), ("/v1/models/num:predict", "error")):
        missing = client.post(path, json={"instances": [[1, 2]]})
        assert missing.status_code == 401 and "API key" in missing.json()[key], path
        assert missing.headers["www-authenticate"] == "Bearer"
        big = client.post(path, content=b"x" * 300, headers=auth)
        assert big.status_code == 413 and "above the limit of 200" in big.json()[key], path
    for probe in ("/health", "/ping", "/version", "/v2/health/live", "/v2/models/num/ready",
                  "/v1/models/num"):
        assert client.get(probe).status_code == 200, probe
    for keyed in ("/metadata", "/v2/models/num"):
        assert client.get(keyed).status_code == 401
        assert client.get(keyed, headers=auth).status_code == 200
    assert ("predict", 401) in server.records and ("oip", 413) in server.records


def test_other_models_and_versions_are_404():
    client, _ = _client()
    assert client.get("/v2/models/other").status_code == 404
    assert "version '9'" in client.get("/v2/models/num/versions/9").json()["error"]
    assert client.get("/v2/models/num/versions/3/ready").json() == {"name": "num",
                                                                   "ready": True}
    assert client.post("/v1/models/other:predict", json={"instances": [[1, 2]]}
                       ).status_code == 404
    assert client.get("/v1/models/num").json() == {"name": "num", "ready": True}


def test_a_bug_is_a_500_in_the_protocols_shape_with_the_request_id():
    client, server = _client()

    async def broken(*args):
        raise RuntimeError("boom")

    server.predict_rows = broken
    r = client.post("/invocations", json={"instances": [[1, 2]]}, headers={"x-request-id": "q"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "q"
    assert "request q" in r.json()["message"] and "boom" not in r.text
    assert ("mlflow", 500) in server.records


# --- the OpenAPI document ---------------------------------------------------------------------

def _doc(features: Features) -> dict:
    return openapi.document("t", "d", FakeServer(features))


def _validator(doc: dict, path: str, method: str = "post",
               media: str = "application/json") -> jsonschema.Draft202012Validator:
    schema = doc["paths"][path][method]["requestBody"]["content"][media]["schema"]
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


def test_every_route_is_documented_and_every_documented_route_exists():
    app = build_fastapi(FakeServer())
    served = {(m.lower(), r.path) for r in app.routes if r.include_in_schema
              for m in r.methods if m != "HEAD"}
    documented = {(m, p) for p, ops in app.openapi()["paths"].items() for m in ops}
    assert served == documented


@pytest.mark.parametrize("features", [NUMERIC, MIXED])
def test_request_schemas_take_what_the_server_takes(features):
    doc = _doc(features)
    row = [1.5, 2] if features is NUMERIC else [None, "red"]
    named = dict(zip(features.names, row, strict=True))
    predict = _validator(doc, "/predict")
    assert predict.is_valid({"instances": [row, named]})
    for bad in ({"instances": []}, {"instances": [row[:1]]}, {"instances": [row], "x": 1},
                {"instances": [{**named, "extra": 1}]}, {"instances": [[True, 1]]}):
        assert not predict.is_valid(bad), bad
    invocations = _validator(doc, "/invocations")
    split = {"columns": list(features.names), "data": [row]}
    for body in ({"dataframe_split": split}, {"dataframe_records": [named], "params": {}},
                 {"instances": [row]}, {"inputs": [named], "other": 1}):
        assert invocations.is_valid(body), body
    assert not invocations.is_valid({"instances": [row], "inputs": [row]})
    kserve = _validator(doc, "/v1/models/{name}:predict")
    assert kserve.is_valid({"instances": [row], "signature_name": "x"})
    assert not kserve.is_valid({"instances": [row], "inputs": [row]})


def test_numbers_beyond_the_limit_are_refused_by_schema_and_server():
    client, _ = _client()
    predict = _validator(_doc(NUMERIC), "/predict")
    assert predict.is_valid({"instances": [[1e19, -1e19]]})
    assert not predict.is_valid({"instances": [[1.1e19, 0]]})
    r = client.post("/predict", json={"instances": [[1.1e19, 0]]})
    assert r.status_code == 422 and "within ±1e+19" in r.json()["detail"]


def test_infer_schema_tensor_and_per_feature_forms():
    doc = _doc(NUMERIC)
    infer = _validator(doc, "/v2/models/{name}/infer")
    tensor = {"name": "t", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}
    assert infer.is_valid({"id": "q", "inputs": [tensor], "outputs": [{"name": "predict"}]})
    assert infer.is_valid({"inputs": [{**tensor, "datatype": "INT64", "data": [1, 2, 3, 4]}]})
    assert not infer.is_valid({"inputs": [{**tensor, "datatype": "INT64", "data": [1.5, 2, 3,
                                                                                    4]}]})
    assert not infer.is_valid({"inputs": [{**tensor, "shape": [2, 3]}]})
    columns = [{"name": n, "shape": [1], "datatype": "FP64", "data": [v]}
               for n, v in (("a", 1), ("b", 2))]
    assert infer.is_valid({"inputs": columns, "parameters": {"content_type": "pd"}})
    assert not infer.is_valid({"inputs": columns, "parameters": {"content_type": "np"}})
    mixed = _validator(_doc(MIXED), "/v2/models/{name}/infer")
    assert mixed.is_valid({"inputs": [
        {"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [None]},
        {"name": "color", "shape": [1], "datatype": "BYTES", "data": ["red"]}]})


def test_the_csv_pattern_is_a_csv_the_server_reads():
    import re

    pattern = _doc(MIXED)["paths"]["/invocations"]["post"]["requestBody"]["content"][
        "text/csv"]["schema"]["pattern"]
    assert re.search(pattern, "x,color\n1.5,red\n,blue")
    assert not re.search(pattern, "x,color\n1.5,")
    client, _ = _client(features=MIXED)
    r = client.post("/invocations", content=b"x,color\n1.5,red\n,blue",
                    headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    assert json.loads(r.text)["predictions"][0]["prediction"] == 1


def test_without_capture_feedback_is_a_404_saying_why_and_is_not_documented():
    app = build_fastapi(FakeServer())
    r = TestClient(app).post("/feedback", json={"labels": [{"request_id": "a", "label": 1}]})
    assert r.status_code == 404 and "serve.capture" in r.json()["detail"]
    assert "/feedback" not in app.openapi()["paths"]


def test_with_capture_the_feedback_schema_takes_what_the_server_takes():
    app = build_fastapi(FakeServer(capture={"flush_s": 1}))
    schema = app.openapi()["paths"]["/feedback"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    check = jsonschema.Draft202012Validator(schema)
    assert check.is_valid({"labels": [{"request_id": "a", "label": 1}]})
    assert check.is_valid({"labels": [{"request_id": "a", "label": "0"}]})
    assert not check.is_valid({"labels": [{"request_id": "a", "label": 7}]})
    assert not check.is_valid({"labels": [{"request_id": "a b", "label": 1}]})
    assert not check.is_valid({"labels": []})


# --- the direct way in (routes.App) ------------------------------------------------------------

_KEY = {"authorization": "Bearer s3cret"}
_DIRECT_CASES = {
    "good": ({"instances": [[1, 2], [-1, 0]]}, _KEY),
    "not json": (b"{nope", _KEY),
    "wrong width": ({"instances": [[1, 2, 3]]}, _KEY),
    "no key": ({"instances": [[1, 2]]}, {}),
    "too big": ({"instances": [[1, 2]] * 40}, _KEY),
    "bad request id": ({"instances": [[1, 2]]}, {**_KEY, "x-request-id": "has space"}),
    "mlflow body": ({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}, _KEY),
}


@pytest.mark.parametrize("path", ["/predict", "/invocations"])
@pytest.mark.parametrize("case", list(_DIRECT_CASES))
def test_a_direct_route_answers_as_fastapis_router_would(path, case):
    """Under a mount point, as Serve runs the app (`root_path`), every status, body and header
    is the one the same endpoint gives through FastAPI's middleware and router."""
    body, headers = _DIRECT_CASES[case]
    headers = {"x-request-id": "same-id", "content-type": "application/json", **headers}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    answers, routed = [], []
    for direct in (True, False):
        server = FakeServer(key="s3cret", max_payload_bytes=300)
        app = _counting(build_fastapi(server), routed)
        if not direct:
            app.direct.clear()
        client = TestClient(app, root_path="/num", raise_server_exceptions=False)
        r = client.post(f"/num{path}", content=content, headers=headers)
        answers.append((r.status_code, r.content, dict(r.headers), server.records))
        assert routed == ([] if direct else [f"/num{path}"])  # the way in it was meant to take
    assert answers[0] == answers[1]
    assert answers[0][0] in (200, 400, 401, 413, 415, 422)


def _counting(app, seen: list[str]):
    """`app` with a FastAPI middleware that notes each path it sees."""
    @app.middleware("http")
    async def count(request, call_next):
        seen.append(request.url.path)
        return await call_next(request)
    return app


def test_only_the_fixed_prediction_paths_skip_fastapis_middleware():
    seen: list[str] = []
    app = _counting(build_fastapi(FakeServer()), seen)
    client = TestClient(app)
    assert set(app.direct) == {"/predict", "/invocations"}
    assert client.post("/predict", json={"instances": [[1, 2]]}).json()["predictions"] == [1]
    assert client.post("/v1/models/num:predict", json={"instances": [[1, 2]]}).status_code == 200
    assert client.get("/health").status_code == 200
    assert client.get("/predict").status_code == 405  # another method: FastAPI's answer
    assert seen == ["/v1/models/num:predict", "/health", "/predict"]
