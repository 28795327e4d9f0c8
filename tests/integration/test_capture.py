"""Integration: request capture and labels in a real Serve app over HTTP on the session's Ray:
captured rows land as parquet with the layout's columns (excluded features absent, hashed ones
salted), a client's x-request-id is the captured row's id, labels by request id (200 and 422),
a storage path that cannot be written still answers 200 and counts the drops in Prometheus, and
Serve's graceful shutdown of a replica writes what it had queued."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from factories import BREAST_CANCER, LOGISTIC, spec_data
from sklearn.datasets import load_breast_cancer

from runtime.monitoring.layout import CAPTURE_META, HASH_PREFIX
from runtime.pipeline.driver import run_job
from runtime.registry import tracking
from runtime.spec import Serve, parse_spec
from serve_apps import config, local

pytestmark = pytest.mark.integration
NAME = "it-capture"
KEY_ENV, SALT_ENV = "MLRT_IT_CAPTURE_KEY", "MLRT_IT_CAPTURE_SALT"
AUTH = {"authorization": "Bearer k3y"}
HASHED, EXCLUDED = "mean radius", "worst area"


@pytest.fixture(scope="module")
def store(ray_session, tmp_path_factory) -> dict:
    storage = str(tmp_path_factory.mktemp("capture") / "store")
    raw = spec_data(storage, NAME, data=BREAST_CANCER,
                    model={**LOGISTIC, "params": {"max_iter": 300}})
    version = run_job(parse_spec(raw), echo=lambda _: None).version
    blocked = Path(storage).parent / "blocked"
    blocked.write_text("a file where the capture directory should be")
    yield {"storage": storage, "version": version, "port": local.free_port(),
           "blocked": str(blocked / "store")}
    from ray import serve

    serve.shutdown()


def _start(store: dict, app: str, storage: str, **serve_fields) -> str:
    target = config.Target(f"models:/{NAME}@champion", Serve(route=f"/{app}", **serve_fields),
                           storage, app)
    return local.start(target, store["port"], wait=False)


@pytest.fixture(scope="module")
def apps(store) -> dict[str, str]:
    """A capturing app (API key, salt), one whose capture path is unwritable (the MLflow store
    is still the real one), one that only writes on shutdown (flush_s an hour)."""
    os.environ[KEY_ENV], os.environ[SALT_ENV] = "k3y", "pepper"
    tracking.use_store(store["storage"])
    os.environ["MLFLOW_TRACKING_URI"] = tracking.tracking_uri(store["storage"])
    try:
        urls = {
            "cap": _start(store, "cap", store["storage"], auth={"api_key_env": KEY_ENV},
                          capture={"flush_s": 0.5, "hash": [HASHED], "exclude": [EXCLUDED],
                                   "salt_env": SALT_ENV}),
            "down": _start(store, "down", store["blocked"], capture={"flush_s": 0.5}),
            "late": _start(store, "late", store["storage"], capture={"flush_s": 3600}),
        }
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI")
    for u in urls.values():
        local.wait_healthy(u, 180)
    return urls


def _rows(n: int, start: int = 0) -> list[list[float]]:
    return load_breast_cancer().data[start:start + n].tolist()


def _captured(storage: str, kind: str = "captures", wanted: int = 1, timeout_s: float = 60):
    root = Path(storage) / kind / NAME
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        files = sorted(root.rglob("*.parquet"))
        if files:
            table = pq.read_table(files, partitioning=None).to_pandas()
            if len(table) >= wanted:
                return files, table
        time.sleep(0.25)
    raise AssertionError(f"no {wanted} {kind} rows under {root} after {timeout_s}s")


def test_captured_rows_land_as_parquet_with_the_layout_columns(store, apps):
    url = apps["cap"]
    one = httpx.post(f"{url}/predict", json={"instances": _rows(2)},
                     headers={**AUTH, "x-request-id": "client-42"}, timeout=30)
    other = httpx.post(f"{url}/invocations", json={"instances": _rows(1, 5)}, headers=AUTH,
                       timeout=30)
    assert one.status_code == other.status_code == 200, (one.text, other.text)
    assert one.json()["request_id"] == one.headers["x-request-id"] == "client-42"
    files, df = _captured(store["storage"], wanted=3)
    assert all(f.parent.name.startswith("date=") for f in files)
    features = list(load_breast_cancer().feature_names)
    assert list(df.columns) == [*CAPTURE_META, *(f for f in features if f != EXCLUDED)]
    mine = df[df["request_id"] == "client-42"]
    assert len(mine) == 2 and mine["prediction"].tolist() == [str(p) for p in
                                                             one.json()["predictions"]]
    assert mine["probabilities"].iloc[0].tolist() == pytest.approx(
        one.json()["probabilities"][0])
    assert set(df["request_id"]) == {"client-42", other.headers["x-request-id"]}
    row = df.iloc[0]
    assert (row["model"], row["version"], row["alias"], row["arm"]) == (
        NAME, store["version"], "champion", "stable")
    assert row["latency_ms"] > 0 and row[features[1]] == _rows(1)[0][1]
    assert row[HASHED].startswith(HASH_PREFIX) and str(_rows(1)[0][0]) not in row[HASHED]
    assert "pepper" not in files[0].read_bytes().decode("latin-1")  # the salt is never stored


def test_feedback_stores_labels_and_refuses_bad_ones(store, apps):
    url = apps["cap"]
    ok = httpx.post(f"{url}/feedback", headers=AUTH, json={"labels": [
        {"request_id": "client-42", "label": 1}, {"request_id": "other", "label": "0"}]})
    assert ok.status_code == 200, ok.text
    assert ok.json()["accepted"] == 2 and ok.json()["request_id"] == ok.headers["x-request-id"]
    _, labels = _captured(store["storage"], "labels", wanted=2)
    assert list(labels.columns) == ["request_id", "label", "time"]
    assert labels.set_index("request_id")["label"].to_dict() == {"client-42": "1", "other": "0"}
    bad = httpx.post(f"{url}/feedback", headers=AUTH, json={"labels": [
        {"request_id": "a", "label": 1}, {"request_id": "b", "label": 7}]})
    assert bad.status_code == 422 and "labels[1].label: 7" in bad.json()["detail"]
    keyless = httpx.post(f"{url}/feedback", json={"labels": [{"request_id": "a", "label": 1}]})
    assert keyless.status_code == 401  # the same key as /predict
    doc = httpx.get(f"{url}/openapi.json").json()
    assert "/feedback" in doc["paths"]


def test_an_unwritable_capture_path_still_answers_and_counts_drops(ray_session, store, apps):
    url = apps["down"]
    for i in range(5):
        r = httpx.post(f"{url}/predict", json={"instances": _rows(1, i)}, timeout=30)
        assert r.status_code == 200, r.text
    port = ray_session.nodes()[0]["MetricsExportPort"]
    wanted = ("mlrt_capture_dropped", 'reason="sink_error"', 'kind="captures"')
    deadline, text = time.monotonic() + 90, ""
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if all(w in text for w in wanted):
            break
        time.sleep(2)
    assert all(w in text for w in wanted), [w for w in wanted if w not in text]
    assert httpx.post(f"{url}/predict", json={"instances": _rows(1)}).status_code == 200


def test_graceful_shutdown_writes_what_was_queued(store, apps):
    from ray import serve

    r = httpx.post(f"{apps['late']}/predict", json={"instances": _rows(3)},
                   headers={"x-request-id": "late-1"}, timeout=30)
    assert r.status_code == 200
    time.sleep(1)
    assert "late-1" not in _ids(store["storage"])  # flush_s is an hour: still queued
    serve.delete("late")
    deadline = time.monotonic() + 30
    while _ids(store["storage"]).count("late-1") < 3 and time.monotonic() < deadline:
        time.sleep(0.25)
    assert _ids(store["storage"]).count("late-1") == 3


def _ids(storage: str) -> list[str]:
    files = sorted((Path(storage) / "captures" / NAME).rglob("*.parquet"))
    return pq.read_table(files, columns=["request_id"]).column(0).to_pylist() if files else []
