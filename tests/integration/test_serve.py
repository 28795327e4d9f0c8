"""Integration: the Ray Serve app over real HTTP on the session's Ray (HAProxy fast path on a
free port): predictions equal mlflow.pyfunc's, every client error status with its message,
auth, overload and recovery, alias moves with requests in flight, the canary split."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter

import h11
import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from factories import BREAST_CANCER, LOGISTIC, spec_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from load import Load  # tests/load.py
from sklearn.datasets import load_breast_cancer

from runtime.governance.audit import Note
from runtime.pipeline.driver import run_job
from runtime.registry import tracking, versions
from runtime.spec import Serve, parse_spec
from serve_apps import config, local

pytestmark = pytest.mark.integration
NAME = "it-serve"
KEY_ENV = "MLRT_IT_SERVE_KEY"
WAIT_MS = 1000  # the open app's batch.wait_ms


def _spec(storage: str, c: float, alias: str) -> dict:
    return spec_data(storage, NAME, data=BREAST_CANCER,
                     model={**LOGISTIC, "params": {"C": c, "max_iter": 300}},
                     register={"alias": alias})


@pytest.fixture(scope="module")
def store(ray_session, tmp_path_factory) -> dict:
    """Two registered versions: v1 (@champion) and v2 (@staging, different predictions)."""
    storage = str(tmp_path_factory.mktemp("serve") / "store")
    v1 = run_job(parse_spec(_spec(storage, 1.0, "champion")), echo=lambda _: None).version
    v2 = run_job(parse_spec(_spec(storage, 0.001, "staging")), echo=lambda _: None).version
    yield {"storage": storage, "v1": v1, "v2": v2, "port": local.free_port()}
    from ray import serve

    serve.shutdown()


def _start(store: dict, app: str, **serve_fields) -> str:
    settings = Serve(route=f"/{app}", **serve_fields)
    target = config.Target(f"models:/{NAME}@champion", settings, store["storage"], app)
    return local.start(target, store["port"], wait=False)


@pytest.fixture(scope="module")
def apps(store) -> dict[str, str]:
    """Three apps started side by side (each takes ~15 s to come up on a busy 2-core box):
    an open one, a strict one (API key, small payload limit, tiny queue), a canary."""
    os.environ[KEY_ENV] = "s3cret"
    _use_store(store)
    versions.move_alias(NAME, "challenger", store["v2"], _note(store))
    urls = {
        # a long wait: a batch that waited for requests still to come would show (a second)
        "open": _start(store, "bc", batch={"max_size": 16, "wait_ms": WAIT_MS}),
        "strict": _start(store, "strict", auth={"api_key_env": KEY_ENV},
                         max_payload_bytes=20_000, max_queued_requests=1,
                         batch={"max_size": 1, "wait_ms": 0},
                         replicas={"min": 1, "max": 1, "target_ongoing_requests": 1}),
        "canary": _start(store, "canary", canary={"alias": "challenger", "weight": 0.1}),
    }
    for u in urls.values():
        local.wait_healthy(u, 180)
    return urls


@pytest.fixture(scope="module")
def url(apps) -> str:
    return apps["open"]


AUTH = {"authorization": "Bearer s3cret"}


def _rows(n: int) -> pd.DataFrame:
    return load_breast_cancer(as_frame=True).data.iloc[:n]


def _use_store(store: dict) -> None:
    tracking.use_store(store["storage"])


def _note(store: dict) -> Note:
    """Who moves aliases in these tests (for the audit trail)."""
    return Note(store["storage"], "it-serve", "test")


def test_predictions_equal_the_pyfunc_model(store, url):
    rows = _rows(60)
    by_list = httpx.post(f"{url}/predict", json={"instances": rows.values.tolist()}, timeout=30)
    by_name = httpx.post(f"{url}/predict", json={"instances": rows.to_dict("records")},
                         timeout=30)
    assert by_list.status_code == 200, by_list.text
    body = by_list.json()
    assert body.pop("request_id") == by_list.headers["x-request-id"]  # one per request
    assert {**by_name.json(), "request_id": None} == {**body, "request_id": None}
    assert body["model"] == {"name": NAME, "version": store["v1"]}
    _use_store(store)
    expected = mlflow.pyfunc.load_model(f"models:/{NAME}/{store['v1']}").predict(rows)
    assert body["predictions"] == expected["prediction"].tolist()
    np.testing.assert_allclose(np.array(body["probabilities"]),
                               expected[["probability_0", "probability_1"]].to_numpy(),
                               rtol=1e-6)


def test_concurrent_requests_never_wait_out_batch_wait_ms(url):
    """A batch waits for more rows only until it holds every row its replica has received:
    under load from clients that each wait for their answer (all of them here), no other row
    can come, so waiting out wait_ms would only add a second to every answer."""
    rows = _rows(8).values.tolist()
    alone = [httpx.post(f"{url}/predict", json={"instances": [r]}, timeout=30).json()
             for r in rows]

    async def burst(client) -> list[tuple[float, dict]]:
        async def one(row) -> tuple[float, dict]:
            start = time.perf_counter()
            response = await client.post(f"{url}/predict", json={"instances": [row]})
            assert response.status_code == 200, response.text
            return time.perf_counter() - start, response.json()
        return await asyncio.gather(*(one(r) for r in rows))

    async def rounds() -> list[tuple[float, dict]]:
        async with httpx.AsyncClient(timeout=30) as client:
            return [answer for _ in range(10) for answer in await burst(client)]

    answers = asyncio.run(rounds())
    slowest = max(seconds for seconds, _ in answers)
    assert slowest < WAIT_MS / 1000 / 2, f"a request took {slowest:.2f}s"
    for i, (_, body) in enumerate(answers):  # batched or not, each gets its own row's answer
        expected = alone[i % len(rows)]
        assert body["predictions"] == expected["predictions"]
        np.testing.assert_allclose(body["probabilities"], expected["probabilities"], rtol=1e-6)


def test_health_metadata_and_openapi(store, url):
    assert httpx.get(f"{url}/health").json()["version"] == store["v1"]
    meta = httpx.get(f"{url}/metadata").json()
    assert meta["name"] == NAME and meta["version"] == store["v1"]
    assert meta["alias"] == "champion" and meta["classes"] == [0, 1]
    assert [f["name"] for f in meta["input_schema"]] == list(_rows(1).columns)
    assert meta["lineage"]["run_id"] and "accuracy" in meta["metrics"]
    assert httpx.get(f"{url}/docs").status_code == 200
    schema = httpx.get(f"{url}/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert "instances" in body["schema"]["properties"]
    assert "mean radius" in schema["components"]["schemas"]["Row"]["properties"]


def _post_raw(url: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{url}/predict", content=content,
                      headers={"content-type": "application/json"}, timeout=30)


ROW = [float(x) for x in range(30)]


def _raw(*rows: str) -> bytes:
    """A body with rows written as raw JSON text (NaN, Infinity, 1e999 are not json.dumps')."""
    return ('{"instances": [' + ", ".join(rows) + "]}").encode()


def _with_last(value: str) -> str:
    return "[" + ", ".join(["1"] * 29 + [value]) + "]"


def _with_first(value: str, at: int = 0) -> str:
    values = ["1"] * 30
    values[at] = value
    return "[" + ", ".join(values) + "]"


@pytest.mark.parametrize("content, message", [
    (b'{"instances": [[1, 2, 3]]}', "instances[0]: expected 30 features"),
    (b'{"instances": [{"mean radius": 1}]}', "instances[0]: missing feature(s) ['mean texture'"),
    (b'{"instances": [{"nope": 1}]}', "instances[0]: unknown feature name(s) ['nope']"),
    (_raw(str(ROW), _with_last('"a"')),
     "instances[1]: feature 'worst fractal dimension' must be a number, got a string"),
    (_raw(_with_last("null")), "instances[0]: feature 'worst fractal dimension' is null"),
    (_raw(_with_first("NaN")), "instances[0]: feature 'mean radius' must be a finite number"),
    (_raw(_with_first("Infinity", 1)),
     "instances[0]: feature 'mean texture' must be a finite number, got inf"),
    (_raw(_with_first("1e999")), "must be a finite number"),
    (_raw(_with_first("true")), "must be a number, got a boolean"),
    (b'{"instances": [', "body is not valid JSON"),
    (b'{"rows": []}', 'body must be a JSON object {"instances"'),
    (b'{"instances": []}', "instances must be a non-empty list"),
    (b'{"instances": [7]}', "instances[0]: a row must be a list in feature order"),
])
def test_client_errors_are_422_naming_the_problem(url, content, message):
    response = _post_raw(url, content)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_payload_limit_wrong_method_and_unknown_path(apps):
    url = apps["strict"]
    big = httpx.post(f"{url}/predict", json={"instances": [ROW] * 200}, headers=AUTH)
    assert big.status_code == 413 and "above the limit of 20000" in big.json()["detail"]
    ok = httpx.post(f"{url}/predict", json={"instances": [ROW] * 50}, headers=AUTH)
    assert ok.status_code == 200
    assert httpx.get(f"{url}/predict").status_code == 405
    assert httpx.get(f"{url}/nothing").status_code == 404


def test_auth_on_and_off(apps, url):
    secured = apps["strict"]
    body = {"instances": [ROW]}
    missing = httpx.post(f"{secured}/predict", json=body)
    wrong = httpx.post(f"{secured}/predict", json=body, headers={"authorization": "Bearer no"})
    right = httpx.post(f"{secured}/predict", json=body,
                       headers={"authorization": "Bearer s3cret"})
    assert missing.status_code == 401 and wrong.status_code == 401
    assert "missing or wrong API key" in wrong.json()["detail"]
    assert right.status_code == 200
    assert httpx.get(f"{secured}/metadata").status_code == 401
    assert httpx.get(f"{secured}/health").status_code == 200  # probes need no key
    assert httpx.post(f"{url}/predict", json=body).status_code == 200  # the open app


async def _overload(url: str, connections: int, rows: int, seconds: float) -> Counter:
    """`connections` clients that each send the next request as soon as the last is answered,
    for `seconds`: more waiting than the replica serves. Plain h11 over a socket with the body
    encoded once, so that the client costs a fraction of what the server does (an httpx client
    on these 2 cores is slower than the replica, and nothing is ever overloaded)."""
    parsed = httpx.URL(url)
    body = json.dumps({"instances": [ROW] * rows}).encode()
    headers = [("host", parsed.host), ("authorization", AUTH["authorization"]),
               ("content-type", "application/json"), ("content-length", str(len(body)))]
    statuses: Counter = Counter()
    deadline = time.monotonic() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
        conn = h11.Connection(h11.CLIENT)
        while time.monotonic() < deadline:
            writer.write(conn.send(h11.Request(method="POST", target=f"{parsed.path}/predict",
                                               headers=headers))
                         + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            while not isinstance(event := conn.next_event(),
                                 h11.EndOfMessage | h11.ConnectionClosed):
                if event is h11.NEED_DATA:
                    conn.receive_data(await asyncio.wait_for(reader.read(65536), 60))
                elif isinstance(event, h11.Response):
                    statuses[event.status_code] += 1
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()  # keep-alive: the next request on this connection
            else:  # the server closed it: a new one
                writer.close()
                reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
                conn = h11.Connection(h11.CLIENT)
        writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return statuses


def test_overload_gives_503_and_the_app_recovers(apps):
    url = apps["strict"]
    statuses = asyncio.run(_overload(url, 64, 50, 2.0))
    assert statuses[503] > 0 and statuses[200] > 0, statuses
    assert set(statuses) <= {200, 503}, statuses
    after = httpx.post(f"{url}/predict", json={"instances": [ROW]}, headers=AUTH, timeout=30)
    assert after.status_code == 200


def _wait_for_version(url: str, version: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/metadata").json()["version"] == version:
            return
        time.sleep(0.2)
    raise AssertionError(f"{url} still serves {httpx.get(f'{url}/metadata').json()['version']}")


def test_alias_moves_with_requests_in_flight_fail_none(store, url):
    _use_store(store)
    with Load(url, ROW) as load:
        time.sleep(1)
        versions.move_alias(NAME, "champion", store["v2"], _note(store))
        _wait_for_version(url, store["v2"])
        time.sleep(1)
        versions.rollback(NAME, "champion", _note(store))
        _wait_for_version(url, store["v1"])
        time.sleep(0.5)
    statuses = Counter(s for s, _ in load.results)
    served = Counter(v for _, v in load.results)
    assert statuses == {200: len(load.results)}, statuses
    assert served[store["v1"]] > 0 and served[store["v2"]] > 0, served


async def _versions(url: str, n: int) -> Counter:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=16), timeout=60) as c:
        sem = asyncio.Semaphore(16)

        async def one() -> str:
            async with sem:
                r = await c.post(f"{url}/predict", json={"instances": [ROW]})
                assert r.status_code == 200, r.text
                return r.json()["model"]["version"]

        return Counter(await asyncio.gather(*(one() for _ in range(n))))


def test_canary_splits_traffic_promote_ends_it_rollback_returns_it(store, apps):
    _use_store(store)
    url = apps["canary"]
    # clears an earlier rollback's tag
    versions.move_alias(NAME, "challenger", store["v2"], _note(store))
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/metadata").json()["canary"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
    meta = httpx.get(f"{url}/metadata").json()
    assert meta["canary"] == {"alias": "challenger", "version": store["v2"], "weight": 0.1}
    served = asyncio.run(_versions(url, 1000))
    share = served[store["v2"]] / 1000
    assert 0.05 <= share <= 0.15, served
    assert httpx.get(f"{url}/openapi.json").json()["info"]["version"] == store["v1"]
    versions.move_alias(NAME, "champion", store["v2"], _note(store))  # promote the challenger
    _wait_for_version(url, store["v2"])
    assert asyncio.run(_versions(url, 50)) == {store["v2"]: 50}
    # /docs describes the version now served, not the one it first rendered
    assert httpx.get(f"{url}/openapi.json").json()["info"]["version"] == store["v2"]
    # v2 is rolled back from: no canary traffic either
    versions.rollback(NAME, "champion", _note(store))
    _wait_for_version(url, store["v1"])
    time.sleep(1.5)
    assert asyncio.run(_versions(url, 100)) == {store["v1"]: 100}
    assert httpx.get(f"{url}/metadata").json()["canary"] is None


def test_env_is_not_leaked_into_the_config(store, apps):
    spec = parse_spec({**_spec(store["storage"], 1.0, "champion"),
                       "serve": {"route": "/x", "auth": {"api_key_env": KEY_ENV}}})
    text = str(config.serve_config(spec))
    assert "s3cret" not in text and KEY_ENV in text
    assert os.environ[KEY_ENV] == "s3cret"


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=8)
_FEATURES = list(load_breast_cancer().feature_names)
_ROWS = st.one_of(
    st.lists(st.floats() | st.integers() | st.none() | st.text(max_size=2), min_size=29,
             max_size=31),
    st.dictionaries(st.sampled_from([*_FEATURES, "x"]), st.floats() | st.integers() | _JSON,
                    min_size=28, max_size=31),
    _JSON)
_BODIES = st.one_of(st.fixed_dictionaries({"instances": st.lists(_ROWS, max_size=3)}),
                    _JSON.map(lambda v: json.dumps(v).encode()), st.binary(max_size=40))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=_BODIES)
def test_no_request_body_gets_a_5xx(url, body):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = _post_raw(url, content)
    assert response.status_code in (200, 422), (response.status_code, response.text, content)


def test_metrics_per_version_reach_prometheus(ray_session, store, url):
    """Request counts by version and status, latency and batch-size histograms are exported
    through Ray's Prometheus endpoint (Ray pushes them every few seconds)."""
    httpx.post(f"{url}/predict", json={"instances": [ROW]})
    httpx.post(f"{url}/predict", json={"instances": [[1.0]]})  # a 422
    port = ray_session.nodes()[0]["MetricsExportPort"]
    wanted = ("mlrt_requests", "mlrt_request_latency_ms_bucket", "mlrt_batch_rows_bucket",
              'status="422"', f'version="{store["v1"]}"')
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if all(w in text for w in wanted):
            break
        time.sleep(2)
    missing = [w for w in wanted if w not in text]
    assert not missing, missing


def test_manual_approval_leaves_the_app_alone_then_switches_it_with_no_failed_request(
        store, url):
    from runtime.governance import approvals

    manual = {**_spec(store["storage"], 0.01, "champion"),
              "register": {"alias": "champion", "approval": "manual"}}
    version = run_job(parse_spec(manual), echo=lambda _: None).version
    _use_store(store)
    assert versions.version_by_alias(NAME, "candidate").version == version
    time.sleep(2)  # the replicas poll every second: @candidate alone must not move them
    assert httpx.get(f"{url}/metadata").json()["version"] == store["v1"]
    with Load(url, ROW) as load:
        time.sleep(1)
        approvals.approve(store["storage"], NAME, version, "it-serve", "reviewed")
        _wait_for_version(url, version)
        time.sleep(0.5)
    statuses = Counter(s for s, _ in load.results)
    served = [v for _, v in load.results]
    assert statuses == {200: len(load.results)}, statuses
    assert served[0] == store["v1"] and served[-1] == version, Counter(served)
    versions.rollback(NAME, "champion", _note(store))  # v1 serves again for what follows
    _wait_for_version(url, store["v1"])
