"""Ray Serve app: a registered mlrt model over HTTP, with its own preprocessing.

    mlrt serve jobs/digits.yaml                      # local, foreground (serve_apps/local.py)
    serve run mlrt-serve.yaml                        # from `mlrt render SPEC --target serve`

Routes (under the spec's `serve.route`): `POST /predict`, `GET /health`, `GET /metadata`,
`GET /docs` (serve_apps/routes.py), and MLflow's `/invocations`, the Open Inference Protocol
v2 (`/v2/...`) and KServe v1 (`/v1/models/...`) (serve_apps/protocol_routes.py). The FastAPI
app is built in each replica after the model is loaded (`__serve_build_asgi_app__`), so the
OpenAPI document is generated from the served model's own features (serve_apps/openapi.py).

The prediction core, `ModelServer.predict_rows(loaded, rows, request_id, started)`, knows no
protocol: every route parses its body into checked rows (serve_apps/validate.py), calls it and
formats (labels, probabilities) its own way. Each success reaches `_on_prediction` with the
request id that every response names: request capture (`serve.capture`) queues it there.

Why the pieces look the way they do:
- Bodies are parsed by hand (serve_apps/validate.py), not by pydantic: the error must name the
  row and the feature, and single-row requests are the hot path.
- Batching is `@serve.batch` counted in rows. A request alone on its replica, or one of a
  full batch's rows, skips it: the model runs at once. Otherwise a batch waits up to
  `batch.wait_ms` for more rows; while the requests are single rows, only until it holds every
  one the replica has received (its max size is set to those rows): under load the rows that
  came in during the last model call form the next batch at once.
- Zero-downtime updates: a thread polls the registry aliases every `poll_s`; a new version is
  loaded beside the old one and swapped in with one assignment. A request keeps the routing it
  started with, so no request fails during the switch, and every response names its version.
- Canary: `serve.canary` sends `weight` of the requests to the canary alias's version, while
  it differs from the champion and has not been rolled back from (registry tag).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
import time
from typing import Any

import numpy as np
import pandas as pd
from ray import serve

from runtime.spec import Serve
from serve_apps import capture_hook, monitor_gauges
from serve_apps.config import AppArgs
from serve_apps.routing import Loaded, VersionRouter
from serve_apps.validate import BadRequest, Features

QUIET_LOGS = {"log_level": "WARNING", "enable_access_log": False}

logger = logging.getLogger("mlrt.serve")
DEPLOYMENT = "Predictor"
_LATENCY_MS = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]
_BATCH_ROWS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]


def deployment_options(spec: Serve) -> dict:
    """Serve deployment options from the spec's serve section (also written by `render`)."""
    replicas = spec.replicas
    return {
        "name": DEPLOYMENT,
        "autoscaling_config": {
            "min_replicas": replicas.min,
            "max_replicas": replicas.max,
            "initial_replicas": max(replicas.min, 1),
            "target_ongoing_requests": replicas.target_ongoing_requests,
            "upscale_delay_s": 3.0,
            "downscale_delay_s": 30.0,
        },
        # room for one full batch of single-row requests plus the next one forming
        "max_ongoing_requests": max(2 * spec.batch.max_size,
                                    int(2 * replicas.target_ongoing_requests), 2),
        "max_queued_requests": spec.max_queued_requests,
        "ray_actor_options": {"num_cpus": spec.cpus_per_replica},
        "health_check_period_s": 2.0,
        # a log line per request costs more than a small model's prediction
        "logging_config": QUIET_LOGS,
    }


def build_app(args: dict) -> serve.Application:
    """Import path for Serve configs: `serve_apps.predictor:build_app` (Serve calls a builder
    with exactly one argument)."""
    return bind_app(args)


def bind_app(args: dict, replica_env: dict[str, str] | None = None) -> serve.Application:
    """The app with its deployment options; `replica_env` carries what must not be written
    into a config file (the API key) when mlrt deploys the app itself."""
    parsed = AppArgs.model_validate(args)
    options = deployment_options(parsed.serve)
    if replica_env:
        options["ray_actor_options"]["runtime_env"] = {"env_vars": dict(replica_env)}
    return ModelServer.options(**options).bind(parsed.model_dump(mode="json"))


def _metrics() -> dict:
    from ray.serve import metrics

    tags = ("model", "version")
    return {
        "requests": metrics.Counter(
            "mlrt_requests", description="Prediction requests by model version, protocol and "
                                         "HTTP status.",
            tag_keys=(*tags, "protocol", "status")),
        "latency": metrics.Histogram(
            "mlrt_request_latency_ms", description="Prediction latency inside the replica (ms).",
            boundaries=_LATENCY_MS, tag_keys=(*tags, "protocol")),
        "batch": metrics.Histogram(
            "mlrt_batch_rows", description="Rows per model call (adaptive batching).",
            boundaries=_BATCH_ROWS, tag_keys=tags),
    }


class _Unbatched:
    """A single-row request in its replica's count of rows that no batch has taken yet
    (`ModelServer._unbatched_rows`): counted off once, when a batch takes it (`_batch_rows`)
    or when the request ends. Each change resizes the batch that forms next
    (`ModelServer._size_batches`)."""

    __slots__ = ("server", "rows")

    def __init__(self, server: Any, rows: int):
        self.server, self.rows = server, rows
        if rows:
            server._unbatched_rows += rows
            server._size_batches()

    def batched(self) -> None:
        if self.rows:
            self.server._unbatched_rows -= self.rows
            self.rows = 0
            self.server._size_batches()


def _batch_rows(items: list[tuple[Any, list, _Unbatched]]) -> int:
    """The batcher's size of a batch it is forming, in rows. Serve calls it as each request
    joins the batch, so this is also where the request's rows stop being rows the batch waits
    for."""
    for _, _, ticket in items:
        ticket.batched()
    return sum(len(rows) for _, rows, _ in items)


@serve.deployment
@serve.ingress()
class ModelServer:
    """One replica: the loaded versions, the batcher, the registry poller and the routes."""

    def __init__(self, args: dict):
        from runtime.registry import tracking
        from serve_apps import wire

        wire.install()  # before Serve starts this replica's HTTP server
        self.args = AppArgs.model_validate(args)
        if self.args.tracking_uri:
            os.environ["MLFLOW_TRACKING_URI"] = self.args.tracking_uri
        tracking.use_store(".mlrt")
        self._api_key = _api_key(self.args.serve)
        self._registry = VersionRouter(self.args)
        self.routing = self._registry.resolve()
        self._wait_s = self.args.serve.batch.wait_ms / 1000
        self._max_rows = self.args.serve.batch.max_size
        self._predict_batch.set_max_batch_size(self._max_rows)
        self._predict_batch.set_batch_wait_timeout_s(self._wait_s)
        self._inflight = 0  # requests in predict_rows
        self._unbatched_rows = 0  # their single rows no batch has taken yet (_Unbatched)
        self._wide_inflight = 0  # those with more rows, but fewer than a batch
        self._batch_size = self._max_rows
        self._metrics = _metrics()
        monitor_gauges.start(self.args.model_uri, self.args.storage)  # drift -> Prometheus
        self.capture = capture_hook.from_args(self.args, self.routing.champion.name,
                                              self.routing.champion.predictor.classes is None)
        if self._registry.alias is not None or self._registry.canary is not None:
            threading.Thread(target=self._poll, name="mlrt-alias-poll", daemon=True).start()

    def __del__(self):
        """Serve's graceful shutdown: the captured rows still queued are written."""
        if getattr(self, "capture", None) is not None:
            self.capture.close()

    def __serve_build_asgi_app__(self):
        from serve_apps import wire
        from serve_apps.routes import build_fastapi

        app = build_fastapi(self)
        wire.unwatch(app.direct)  # short model calls: Serve need not watch for disconnects
        return app

    # --- registry polling --------------------------------------------------------------------

    def _poll(self) -> None:
        """Daemon thread: ends with the replica's process."""
        while True:
            time.sleep(self.args.poll_s)
            try:
                routing = self._registry.resolve()
            except Exception as e:  # noqa: BLE001 - a registry hiccup must not stop serving
                logger.warning("alias poll failed (still serving v%s): %s",
                               self.routing.champion.version, e)
                continue
            if routing != self.routing:
                self.routing = routing  # one assignment: requests see the old or the new

    # --- prediction ----------------------------------------------------------------------------

    def check_key(self, header: str | None) -> None:
        check_key(self._api_key, header)

    async def predict_rows(self, loaded: Loaded, rows: Any, request_id: str,
                           started: float) -> tuple[np.ndarray, np.ndarray | None]:
        """The prediction core every protocol calls: checked rows (validate.parse_rows) ->
        (labels, class probabilities or None) of version `loaded`, through the batcher. A
        model error or a non-finite answer is a BadRequest(422); a success goes to
        `_on_prediction` with the request's id and its latency since `started`."""
        self._inflight += 1
        wide = 1 < len(rows) < self._max_rows  # a full batch skips the batcher
        if wide:
            self._wide_inflight += 1
            self._size_batches()
        # a single row counts as one a batch may wait for, until a batch takes it
        ticket = _Unbatched(self, 1 if len(rows) == 1 else 0)
        try:
            # One turn of the loop first, so that the requests that arrived with this one get
            # here too: they are counted (a whole request HAProxy forwards would otherwise run
            # to its answer with the requests behind it uncounted in the sockets: no 503 at
            # max_queued_requests), and they can share this one's batch.
            await asyncio.sleep(0)
            if len(rows) >= self._max_rows or self._inflight == 1:
                # a full batch, or alone on this replica: the model now, without the batcher's
                # queue, task and future (a tenth of a lone request's replica CPU)
                labels, proba = self._run(loaded, [rows])[0]
            else:
                labels, proba = await self._predict_batch((loaded, rows, ticket))
        finally:
            self._inflight -= 1
            ticket.batched()  # if no batch took it (alone, or cancelled while it waited)
            if wide:
                self._wide_inflight -= 1
                self._size_batches()
        labels, proba = _checked(labels, proba)
        latency_ms = (time.perf_counter() - started) * 1000
        try:
            self._on_prediction(loaded, request_id, rows, labels, proba, latency_ms)
        except Exception as e:  # noqa: BLE001 - a hook must never fail a prediction
            logger.warning("prediction hook failed (request %s still answered): %s",
                           request_id, e)
        return labels, proba

    def _on_prediction(self, loaded: Loaded, request_id: str, rows: Any, labels: np.ndarray,
                       proba: np.ndarray | None, latency_ms: float) -> None:
        """Called once per successful prediction, in the request's task, with the rows as
        validated (a float64 matrix, or lists in feature order), the request id every response
        names and the latency so far. Request capture hands the rows to its bounded queue
        (serve_apps/capture_hook.py); it never blocks."""
        if self.capture is not None:
            self.capture.on_prediction(loaded, self.routing, self._registry, request_id, rows,
                                       labels, proba, latency_ms)

    def _size_batches(self) -> None:
        """The size of the batch that forms next (Serve reads it when a batch takes its first
        request). A batch waits up to wait_ms for more rows, but while single-row requests are
        all there is, only until it holds every one this replica has received and no batch
        has taken: the next have not even arrived. With a wider request in flight the size
        stays max_size (Serve refuses a batch's first request if it is wider than the size)."""
        size = self._max_rows if self._wide_inflight else max(
            1, min(self._max_rows, self._unbatched_rows))
        if size != self._batch_size:
            self._batch_size = size
            self._predict_batch.set_max_batch_size(size)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0, batch_size_fn=_batch_rows)
    async def _predict_batch(self, items: list[tuple[Loaded, list, _Unbatched]]) -> list:
        by_version: dict[str, list[int]] = {}
        for i, (loaded, _, _) in enumerate(items):
            by_version.setdefault(loaded.version, []).append(i)
        results: list[Any] = [None] * len(items)
        for indices in by_version.values():
            group = [items[i] for i in indices]
            for i, result in zip(indices, self._run(group[0][0], [r for _, r, _ in group]),
                                 strict=True):
                results[i] = result
        return results

    def _run(self, loaded: Loaded, requests: list[list]) -> list[tuple[Any, Any]]:
        """One model call for several requests' rows; a failure is delivered to each caller."""
        tags = {"model": loaded.name, "version": loaded.version}
        self._metrics["batch"].observe(sum(len(r) for r in requests), tags=tags)
        try:
            if loaded.features.all_numeric:  # float64 matrices from parse_body
                matrix = requests[0] if len(requests) == 1 else np.vstack(requests)
                labels, proba = loaded.predictor.predict_rows(matrix)
            else:
                labels, proba = loaded.predictor.predict(_frame(loaded.features, requests))
        except Exception as e:  # noqa: BLE001 - returned to every request of this batch
            if len(requests) > 1:  # one bad request must not fail the others
                return [self._run(loaded, [r])[0] for r in requests]
            return [(e, None)]
        out, start = [], 0
        for r in requests:
            end = start + len(r)
            out.append((labels[start:end], None if proba is None else proba[start:end]))
            start = end
        return out

    def record(self, loaded: Loaded, protocol: str, status: int, started: float) -> None:
        """One answered prediction request in the metrics (`protocol`: predict, mlflow, oip,
        kserve_v1)."""
        tags = {"model": loaded.name, "version": loaded.version, "protocol": protocol}
        self._metrics["requests"].inc(tags={**tags, "status": str(status)})
        if status == 200:
            self._metrics["latency"].observe((time.perf_counter() - started) * 1000, tags=tags)

    def metadata(self) -> dict:
        r = self.routing
        m = r.champion
        meta = m.predictor.meta
        return {
            "name": m.name, "version": m.version, "alias": r.alias,
            "uri": f"models:/{m.name}/{m.version}",
            "task": meta.task, "framework": meta.framework,
            "classes": meta.classes,
            "input_schema": [{"name": n, "type": "categorical" if n in m.features.categorical
                              else "numeric", "nullable": n in m.features.nullable}
                             for n in m.features.names],
            "metrics": json.loads(m.tags.get("mlrt.metrics", "{}")),
            "lineage": {"run_id": m.run_id, **{k.removeprefix("mlrt."): v for k, v in
                        m.tags.items() if k in _LINEAGE_TAGS}},
            "canary": None if r.challenger is None else {
                "alias": self._registry.canary.alias, "version": r.challenger.version,
                "weight": r.weight},
            "batch": {"max_size": self._max_rows, "wait_ms": self._wait_s * 1000},
        }


_LINEAGE_TAGS = ("mlrt.spec_hash", "mlrt.data_fingerprint", "mlrt.git_commit", "mlrt.gate",
                 "mlrt.task")


def check_key(api_key: str | None, header: str | None) -> None:
    """`Authorization: Bearer <key>` when the app has a key. Raises BadRequest(401)."""
    if api_key is None:
        return
    given = (header or "").removeprefix("Bearer ").strip()
    if not header or not header.startswith("Bearer ") or not hmac.compare_digest(
            given.encode(), api_key.encode()):
        raise BadRequest(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")


def _api_key(spec: Serve) -> str | None:
    if spec.auth is None:
        return None
    key = os.environ.get(spec.auth.api_key_env, "")
    if not key:  # fail closed: an auth spec without a key must not serve an open endpoint
        raise RuntimeError(f"serve.auth.api_key_env: {spec.auth.api_key_env} is not set in "
                           "the replica's environment")
    return key


def _frame(features: Features, requests: list) -> pd.DataFrame:
    """Several requests' rows (lists in feature order) -> one frame."""
    return pd.DataFrame([row for rows in requests for row in rows], columns=list(features.names))


def _checked(labels: Any, proba: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """A batch's result for one request -> (labels, proba), or the BadRequest(422) it means."""
    if isinstance(labels, Exception):
        from runtime.errors import InputError

        if isinstance(labels, InputError | ValueError | TypeError):
            raise BadRequest(422, f"the model could not use these rows: {labels}")
        raise labels
    labels = np.asarray(labels)
    bad = _non_finite_rows(labels, proba)
    if bad:
        raise BadRequest(422, f"rows {bad[:5]}: values out of the model's range give "
                              "non-finite output")
    return labels, None if proba is None else np.asarray(proba, dtype=np.float64)


def _non_finite_rows(labels: np.ndarray, proba: Any) -> list[int]:
    bad = np.zeros(len(labels), dtype=bool)
    if labels.dtype.kind == "f":
        bad |= ~np.isfinite(labels)
    if proba is not None:
        bad |= ~np.isfinite(np.asarray(proba, dtype=np.float64)).all(axis=1)
    return [int(i) for i in np.flatnonzero(bad)]
