"""Ray Serve app: a registered mlrt model over HTTP, with its own preprocessing.

    mlrt serve jobs/digits.yaml                      # local, foreground (runtime/serving.py)
    serve run mlrt-serve.yaml                        # from `mlrt render SPEC --target serve`

Routes (under the spec's `serve.route`): `POST /predict`, `GET /health`, `GET /metadata`,
`GET /docs`. The FastAPI app is built in each replica after the model is loaded
(`__serve_build_asgi_app__`), so the OpenAPI request model is generated from the served
model's own features.

Why the pieces look the way they do:
- Bodies are parsed by hand (serve_apps/validate.py), not by pydantic: the error must name the
  row and the feature, and single-row requests are the hot path.
- Batching is `@serve.batch` counted in rows, with its wait set per request: 0 when this
  request is alone on the replica (a lone request never waits out `batch.wait_ms`), `wait_ms`
  when others are in flight (they will join the batch). Requests bigger than a batch skip it.
- Zero-downtime updates: a thread polls the registry aliases every `poll_s`; a new version is
  loaded beside the old one and swapped in with one assignment. A request keeps the routing it
  started with, so no request fails during the switch, and every response names its version.
- Canary: `serve.canary` sends `weight` of the requests to the canary alias's version, while
  it differs from the champion and has not been rolled back from (registry tag).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from ray import serve

from runtime.registry import ROLLED_BACK_TAG
from runtime.spec import Serve
from serve_apps.validate import BadRequest, Features, parse_body, request_schema

QUIET_LOGS = {"log_level": "WARNING", "enable_access_log": False}

logger = logging.getLogger("mlrt.serve")
DEPLOYMENT = "Predictor"
_LATENCY_MS = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]
_BATCH_ROWS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]


class AppArgs(BaseModel):
    """The app's arguments (the `args:` of a Serve config): JSON only."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_uri: str
    tracking_uri: str | None = None
    serve: Serve = Serve()
    poll_s: float = 1.0


@dataclass(frozen=True, eq=False)
class Loaded:
    """One loaded model version (compared by identity: the registry reuses loaded ones)."""

    name: str
    version: str
    predictor: Any
    features: Features
    tags: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None


@dataclass(frozen=True)
class Routing:
    """What serves right now; replaced whole (one assignment) when an alias moves."""

    champion: Loaded
    alias: str | None
    challenger: Loaded | None = None
    weight: float = 0.0

    def pick(self) -> Loaded:
        if self.challenger is not None and random.random() < self.weight:
            return self.challenger
        return self.champion


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


def load_version(name: str, version: str) -> Loaded:
    """Fetch a registered version's mlrt files and load them (safetensors/skops/JSON only)."""
    from runtime.batch import fetch_model
    from runtime.inference import Predictor

    model = fetch_model(f"models:/{name}/{version}")
    predictor = Predictor.from_files(model.files)
    return Loaded(name, str(version), predictor, Features.from_state(predictor.state),
                  dict(model.info.tags), model.info.run_id)


class _Registry:
    """Resolves the served URI (and the canary alias) to loaded versions; reuses loaded ones."""

    def __init__(self, args: AppArgs):
        from runtime.batch import parse_model_uri

        self.name, self.version, self.alias = parse_model_uri(args.model_uri)
        self.canary = args.serve.canary
        self._cache: dict[str, Loaded] = {}

    def resolve(self) -> Routing:
        from runtime import registry
        from runtime.batch import resolve_version

        version = self.version
        if self.alias is not None:  # polled every second: no lookup when the URI is a version
            version = resolve_version(self.name, None, self.alias).version
        champion = self._get(str(version))
        challenger, weight = None, 0.0
        if self.canary is not None:
            info = registry.version_by_alias(self.name, self.canary.alias)
            if (info is not None and info.version != champion.version
                    and info.tags.get(ROLLED_BACK_TAG) != "true"):
                challenger, weight = self._get(info.version), self.canary.weight
        keep = {champion.version} | ({challenger.version} if challenger else set())
        self._cache = {v: m for v, m in self._cache.items() if v in keep}
        return Routing(champion, self.alias, challenger, weight)

    def _get(self, version: str) -> Loaded:
        if version not in self._cache:
            self._cache[version] = load_version(self.name, version)
        return self._cache[version]


def _metrics() -> dict:
    from ray.serve import metrics

    tags = ("model", "version")
    return {
        "requests": metrics.Counter(
            "mlrt_requests", description="Predict requests by model version and HTTP status.",
            tag_keys=(*tags, "status")),
        "latency": metrics.Histogram(
            "mlrt_request_latency_ms", description="Predict latency inside the replica (ms).",
            boundaries=_LATENCY_MS, tag_keys=tags),
        "batch": metrics.Histogram(
            "mlrt_batch_rows", description="Rows per model call (adaptive batching).",
            boundaries=_BATCH_ROWS, tag_keys=tags),
    }


@serve.deployment
@serve.ingress()
class ModelServer:
    """One replica: the loaded versions, the batcher, the registry poller and the routes."""

    def __init__(self, args: dict):
        from runtime import registry

        self.args = AppArgs.model_validate(args)
        if self.args.tracking_uri:
            os.environ["MLFLOW_TRACKING_URI"] = self.args.tracking_uri
        registry.use_store(".mlrt")
        self._api_key = _api_key(self.args.serve)
        self._registry = _Registry(self.args)
        self.routing = self._registry.resolve()
        self._wait_s = self.args.serve.batch.wait_ms / 1000
        self._max_rows = self.args.serve.batch.max_size
        self._predict_batch.set_max_batch_size(self._max_rows)
        self._inflight = 0
        self._metrics = _metrics()
        if self._registry.alias is not None or self._registry.canary is not None:
            threading.Thread(target=self._poll, name="mlrt-alias-poll", daemon=True).start()

    def __serve_build_asgi_app__(self):
        from serve_apps.http import build_fastapi

        return build_fastapi(self)

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
        if self._api_key is None:
            return
        given = (header or "").removeprefix("Bearer ").strip()
        if not header or not header.startswith("Bearer ") or not hmac.compare_digest(
                given.encode(), self._api_key.encode()):
            raise BadRequest(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")

    async def predict(self, loaded: Loaded, body: bytes) -> dict:
        """Validated body -> the response of version `loaded` (routing.pick())."""
        rows = parse_body(body, loaded.features)
        self._inflight += 1
        try:
            if len(rows) >= self._max_rows:
                labels, proba = self._run(loaded, [rows])[0]
            else:
                # alone on this replica: do not wait for a batch that will not come
                self._predict_batch.set_batch_wait_timeout_s(
                    self._wait_s if self._inflight > 1 else 0.0)
                labels, proba = await self._predict_batch((loaded, rows))
        finally:
            self._inflight -= 1
        return _response(loaded, labels, proba)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0,
                 batch_size_fn=lambda items: sum(len(rows) for _, rows in items))
    async def _predict_batch(self, items: list[tuple[Loaded, list]]) -> list:
        by_version: dict[str, list[int]] = {}
        for i, (loaded, _) in enumerate(items):
            by_version.setdefault(loaded.version, []).append(i)
        results: list[Any] = [None] * len(items)
        for indices in by_version.values():
            group = [items[i] for i in indices]
            for i, result in zip(indices, self._run(group[0][0], [r for _, r in group]),
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

    def record(self, loaded: Loaded, status: int, started: float) -> None:
        tags = {"model": loaded.name, "version": loaded.version}
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
            "task": meta.get("task"), "framework": meta.get("framework"),
            "classes": meta.get("classes"),
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

    def request_schema(self) -> dict:
        return request_schema(self.routing.champion.features)


_LINEAGE_TAGS = ("mlrt.spec_hash", "mlrt.data_fingerprint", "mlrt.git_commit", "mlrt.gate",
                 "mlrt.task")


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


def _response(loaded: Loaded, labels: Any, proba: Any) -> dict:
    if isinstance(labels, Exception):
        from runtime.errors import InputError

        if isinstance(labels, InputError | ValueError | TypeError):
            raise BadRequest(422, f"the model could not use these rows: {labels}")
        raise labels
    labels = np.asarray(labels)
    bad = _non_finite_rows(labels, proba)
    if bad:
        raise BadRequest(422, f"instances{bad[:5]}: values out of the model's range give "
                              "non-finite output")
    out = {"predictions": labels.tolist()}
    if proba is not None:
        out["probabilities"] = np.asarray(proba).tolist()
    out["model"] = {"name": loaded.name, "version": loaded.version}
    return out


def _non_finite_rows(labels: np.ndarray, proba: Any) -> list[int]:
    bad = np.zeros(len(labels), dtype=bool)
    if labels.dtype.kind == "f":
        bad |= ~np.isfinite(labels)
    if proba is not None:
        bad |= ~np.isfinite(np.asarray(proba, dtype=np.float64)).all(axis=1)
    return [int(i) for i in np.flatnonzero(bad)]
