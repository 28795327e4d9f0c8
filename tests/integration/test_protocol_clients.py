"""Integration: the protocols' own clients against two real Serve apps on the session's Ray,
started together on one port (one numeric model, one with categorical and imputed features):
tritonclient (OIP v2, JSON and binary tensors), MLflow's ScoringServerClient and the four
JSON formats plus CSV (predictions equal to mlflow.pyfunc of the same version), KServe v1 over
httpx, request ids, Serve's own /-/routes, independent autoscaling, and schemathesis against
every operation of both apps."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from factories import BREAST_CANCER, LOGISTIC, make_spec, mixed_rows
from sklearn.datasets import load_breast_cancer

from runtime.pipeline.driver import run_job
from runtime.registry import tracking
from runtime.spec import Serve
from serve_apps import config, local

pytestmark = pytest.mark.integration
NUM, CAT = "it-proto-num", "it-proto-cat"
CAT_FEATURES = ["x1", "x2", "color"]


def _cat_rows(n: int, seed: int) -> pd.DataFrame:
    return mixed_rows(n, seed).drop(columns="id")


@pytest.fixture(scope="module")
def store(ray_session, tmp_path_factory) -> dict:
    """Two registered models in one store: numeric (breast cancer, classes 0/1) and mixed
    (x1 imputed, x2 numeric, color categorical; classes maybe/no/yes)."""
    tmp = tmp_path_factory.mktemp("protocols")
    storage = str(tmp / "store")
    _cat_rows(600, 0).to_parquet(tmp / "train.parquet")
    run_job(make_spec(storage, NUM, data=BREAST_CANCER,
                      model={**LOGISTIC, "params": {"max_iter": 300}}), echo=lambda _: None)
    run_job(make_spec(
        storage, CAT,
        data={"source": {"kind": "parquet", "path": str(tmp / "train.parquet")},
              "target": "label", "split": {"test": 0.2, "validation": 0.0, "seed": 0},
              "preprocess": [{"op": "impute", "columns": ["x1"], "strategy": "mean"},
                             {"op": "standard_scale", "columns": "numeric"},
                             {"op": "one_hot", "columns": ["color"]}]},
        model={**LOGISTIC, "params": {"max_iter": 500}},
        evaluate={"gate": {"metric": "accuracy", "min": 0.5}}), echo=lambda _: None)
    yield {"storage": storage, "port": local.free_port()}
    from ray import serve

    serve.shutdown()


@pytest.fixture(scope="module")
def urls(store) -> dict[str, str]:
    """Both models on one Serve, one port: the numeric one may scale to 2 replicas."""
    targets = [
        config.Target(f"models:/{NUM}@champion", Serve(
            route="/num", replicas={"min": 1, "max": 2, "target_ongoing_requests": 1},
            batch={"max_size": 8, "wait_ms": 2}), store["storage"], NUM),
        config.Target(f"models:/{CAT}@champion", Serve(route="/cat"), store["storage"], CAT)]
    config.check_targets(targets)
    found = local.start_all(targets, store["port"])
    return {NUM: found[0], CAT: found[1]}


def _pyfunc(store: dict, name: str, rows: pd.DataFrame) -> pd.DataFrame:
    tracking.use_store(store["storage"])
    return mlflow.pyfunc.load_model(f"models:/{name}/1").predict(rows)


def _num_rows(n: int = 20) -> pd.DataFrame:
    return load_breast_cancer(as_frame=True).data.iloc[:n]


def _cat_input(n: int = 20) -> pd.DataFrame:
    rows = _cat_rows(n, 1).drop(columns="label")
    rows.loc[2, "x1"] = np.nan  # imputed by the model
    return rows


# --- Open Inference Protocol v2: tritonclient ---------------------------------------------------

def _triton(url: str):
    from tritonclient.http import InferenceServerClient

    return InferenceServerClient(url.removeprefix("http://"))  # host:port/route


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_numeric_tensor(store, urls, binary):
    from tritonclient.http import InferInput, InferRequestedOutput

    client = _triton(urls[NUM])
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(NUM) and client.is_model_ready(NUM, "1")
    assert not client.is_model_ready("nope")
    meta = client.get_model_metadata(NUM)
    assert meta["versions"] == ["1"] and meta["inputs"][0]["shape"] == [-1, 30]
    rows = _num_rows()
    tensor = InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows.to_numpy(), binary_data=binary)
    outputs = [InferRequestedOutput(n, binary_data=binary) for n in ("predict", "predict_proba")]
    result = client.infer(NUM, [tensor], outputs=outputs, request_id="tri-1")
    expected = _pyfunc(store, NUM, rows)
    assert result.as_numpy("predict").tolist() == expected["prediction"].tolist()
    np.testing.assert_allclose(result.as_numpy("predict_proba"),
                               expected[["probability_0", "probability_1"]], rtol=1e-9)
    assert result.get_response()["id"] == "tri-1"
    assert result.get_response()["model_version"] == "1"


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_categorical_inputs_as_bytes(store, urls, binary):
    from tritonclient.http import InferInput

    rows = _cat_input()
    inputs = []
    for name in CAT_FEATURES:
        values = rows[name].to_numpy()
        datatype = "BYTES" if name == "color" else "FP64"
        tensor = InferInput(name, [len(rows), 1], datatype)
        tensor.set_data_from_numpy((values.astype(object) if datatype == "BYTES"
                                    else values.astype(np.float64)).reshape(-1, 1),
                                   binary_data=binary)
        inputs.append(tensor)
    client = _triton(urls[CAT])
    meta = client.get_model_metadata(CAT)
    assert [i["datatype"] for i in meta["inputs"]] == ["FP64", "FP64", "BYTES"]
    result = client.infer(CAT, inputs)
    expected = _pyfunc(store, CAT, rows)
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict")]
    assert labels == expected["prediction"].tolist()
    np.testing.assert_allclose(result.as_numpy("predict_proba"),
                               expected[[f"probability_{c}" for c in ("maybe", "no", "yes")]],
                               rtol=1e-9)


def test_tritonclient_reports_a_bad_request_readably(urls):
    from tritonclient.http import InferInput
    from tritonclient.utils import InferenceServerException

    tensor = InferInput("input-0", [1, 3], "FP64")
    tensor.set_data_from_numpy(np.ones((1, 3)), binary_data=True)
    with pytest.raises(InferenceServerException, match=r"shape \[1, 3\] does not fit the model"):
        _triton(urls[NUM]).infer(NUM, [tensor])
    with pytest.raises(InferenceServerException, match="version '7' of model"):
        _triton(urls[NUM]).get_model_metadata(NUM, "7")


# --- MLflow scoring: ScoringServerClient and the four JSON formats ------------------------------

def _scoring_client(url: str):
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    client = ScoringServerClient("127.0.0.1", 0)
    client.url_prefix = url  # the client knows host:port only; the model is under its route
    return client


@pytest.mark.parametrize("name", [NUM, CAT])
def test_mlflow_scoring_client_and_every_format_equal_pyfunc(store, urls, name):
    from mlflow.deployments import PredictionsResponse

    rows = _num_rows() if name == NUM else _cat_input()
    expected = _pyfunc(store, name, rows)
    client = _scoring_client(urls[name])
    client.ping()
    assert client.get_version() == mlflow.__version__
    answers = {"client": client.invoke(rows).get_predictions()}
    records = json.loads(rows.to_json(orient="records"))  # NaN -> null, as clients send it
    bodies = {
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": {c: [r[c] for r in records] for c in rows.columns}},
    }
    for key, body in bodies.items():
        r = httpx.post(f"{urls[name]}/invocations", json=body, timeout=30)
        assert r.status_code == 200, (key, r.text)
        answers[key] = PredictionsResponse.from_json(r.text).get_predictions()
    csv = httpx.post(f"{urls[name]}/invocations", content=rows.to_csv(index=False),
                     headers={"content-type": "text/csv"}, timeout=30)
    assert csv.status_code == 200, csv.text
    answers["csv"] = PredictionsResponse.from_json(csv.text).get_predictions()
    for key, got in answers.items():
        pd.testing.assert_frame_equal(got, expected.reset_index(drop=True), check_dtype=False,
                                      obj=key)


def test_mlflow_errors_are_its_shape_with_mlrts_message(urls):
    bad = httpx.post(f"{urls[NUM]}/invocations", json={"rows": []})
    assert bad.status_code == 400 and bad.json()["error_code"] == "BAD_REQUEST"
    value = httpx.post(f"{urls[NUM]}/invocations", json={"instances": [[1.0] * 29 + ["x"]]})
    assert value.status_code == 422 and "must be a number" in value.json()["message"]
    media = httpx.post(f"{urls[NUM]}/invocations", content=b"x", headers={
        "content-type": "application/xml"})
    assert media.status_code == 415 and media.json()["request_id"] == media.headers[
        "x-request-id"]


# --- KServe v1 --------------------------------------------------------------------------------

def test_kserve_v1_over_httpx(store, urls):
    rows = _num_rows()
    expected = _pyfunc(store, NUM, rows)["prediction"].tolist()
    url = urls[NUM]
    assert httpx.get(f"{url}/v1/models/{NUM}").json() == {"name": NUM, "ready": True}
    for body in ({"instances": rows.values.tolist()},
                 {"inputs": rows.to_dict(orient="list")}):
        r = httpx.post(f"{url}/v1/models/{NUM}:predict", json=body, timeout=30)
        assert r.status_code == 200 and r.json()["predictions"] == expected, r.text
    other = httpx.post(f"{url}/v1/models/nope:predict", json={"instances": [[1.0] * 30]})
    assert other.status_code == 404 and "nope" in other.json()["error"]


# --- request ids, two models, Serve's routes --------------------------------------------------

def test_request_ids_round_trip_and_a_bad_id_is_a_422(urls):
    url = urls[NUM]
    body = {"instances": [[1.0] * 30]}
    own = httpx.post(f"{url}/predict", json=body, headers={"x-request-id": "order-42/a"})
    assert own.headers["x-request-id"] == "order-42/a" and own.json()["request_id"] == \
        "order-42/a"
    made = httpx.post(f"{url}/invocations", json=body)
    assert made.json()["request_id"] == made.headers["x-request-id"]
    for bad in ("has space", "x" * 129):
        r = httpx.post(f"{url}/v2/models/{NUM}/infer", headers={"x-request-id": bad}, json={
            "inputs": [{"name": "t", "shape": [1, 30], "datatype": "FP64", "data": [1.0] * 30}]})
        assert r.status_code == 422 and "x-request-id" in r.json()["error"]


def test_two_models_answer_on_their_own_routes_and_serve_lists_them(store, urls):
    num = httpx.post(f"{urls[NUM]}/predict", json={"instances": [[1.0] * 30]})
    cat = httpx.post(f"{urls[CAT]}/predict",
                     json={"instances": [{"x1": None, "x2": 3, "color": "red"}]})
    assert num.json()["model"]["name"] == NUM and cat.json()["model"]["name"] == CAT
    assert cat.json()["predictions"][0] in ("maybe", "no", "yes")
    routes = httpx.get(f"http://127.0.0.1:{store['port']}/-/routes").json()
    assert routes.get("/num") == NUM and routes.get("/cat") == CAT, routes


def test_each_app_autoscales_on_its_own(urls):
    """Load on the numeric model only: it scales to its max of 2 replicas, the other stays
    at 1 (Serve's autoscaler acts per deployment; upscale_delay_s is 3 s)."""
    from ray import serve

    def running(app: str) -> int:
        return serve.status().applications[app].deployments["Predictor"].replica_states.get(
            "RUNNING", 0)

    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                client.post(f"{urls[NUM]}/predict", json={"instances": [[1.0] * 30] * 4})

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 120
        while running(NUM) < 2 and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert running(NUM) == 2 and running(CAT) == 1


@pytest.mark.parametrize("name", [NUM, CAT])
def test_schemathesis_finds_no_schema_valid_request_refused_and_no_5xx(urls, name, tmp_path):
    """Every documented operation, positive and negative data, all of schemathesis' checks."""
    cli = Path(sys.executable).with_name("schemathesis")
    if not cli.exists():
        pytest.skip(f"schemathesis is not installed at {cli} (dev extra)")
    result = subprocess.run(
        [str(cli), "run", f"{urls[name]}/openapi.json", "--url", urls[name], "--checks", "all",
         "--max-examples", "15", "--workers", "1", "--seed", "7", "--request-timeout", "30",
         "--suppress-health-check", "all"],
        capture_output=True, text=True, timeout=1500, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
