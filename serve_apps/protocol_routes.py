"""The routes of the protocols besides /predict, each a few lines over its adapter
(serve_apps/protocols/) and the shared helper (routes.answer: request id, key, body limit,
version pick, metrics, headers). Under the spec's `serve.route`:

    POST /invocations, GET /ping, /version                  MLflow scoring (/health: routes.py)
    GET  /v2, /v2/health/live, /v2/health/ready             Open Inference Protocol v2
    GET  /v2/models/{name}[/versions/{v}][/ready]
    POST /v2/models/{name}[/versions/{v}]/infer
    GET  /v1/models, /v1/models/{name}                      KServe v1
    POST /v1/models/{name}:predict

Probes (/ping, /version, the health and ready routes, /v1/models/{name}) need no API key;
model metadata and predictions do, as /metadata and /predict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from starlette.responses import Response

from serve_apps.protocols import kserve_v1, oip
from serve_apps.protocols import mlflow_scoring as mls
from serve_apps.protocols._common import json_reply
from serve_apps.routes import App, Call, Protocol, Reply, answer, champion, health_handler

if TYPE_CHECKING:
    from serve_apps.predictor import ModelServer
    from serve_apps.routing import Loaded, Routing

MLFLOW = Protocol("mlflow", mls.error_reply)
OIP = Protocol("oip", oip.error_reply)
KSERVE_V1 = Protocol("kserve_v1", kserve_v1.error_reply)


def add_routes(app: App, server: ModelServer) -> None:
    _add_mlflow(app, server)
    _add_oip(app, server)
    _add_kserve_v1(app, server)


def _add_mlflow(app: App, server: ModelServer) -> None:
    async def invocations_handler(loaded: Loaded, call: Call) -> Reply:
        rows = mls.parse_invocation(call.request.headers.get("content-type"), call.body,
                                    loaded.features)
        labels, proba = await server.predict_rows(loaded, rows, call.request_id, call.started)
        return mls.invocation_reply(labels, proba, loaded.info, call.request_id)

    async def version_handler(loaded: Loaded, call: Call) -> Reply:
        return mls.version_reply()

    @app.direct_post("/invocations")
    async def invocations(request: Request) -> Response:
        return await answer(server, request, MLFLOW, invocations_handler)

    @app.get("/ping")
    async def ping(request: Request) -> Response:
        return await _probe(server, request, MLFLOW, health_handler)

    @app.get("/version")
    async def version(request: Request) -> Response:
        return await _probe(server, request, MLFLOW, version_handler)


def _add_oip(app: FastAPI, server: ModelServer) -> None:
    async def infer_handler(loaded: Loaded, call: Call) -> Reply:
        headers = call.request.headers
        parsed = oip.parse_infer(call.body, headers.get(oip.HEADER_LENGTH),
                                 headers.get("content-encoding"), loaded.info)
        labels, proba = await server.predict_rows(loaded, parsed.rows, call.request_id,
                                                  call.started)
        return oip.infer_reply(parsed, labels, proba, loaded.info, call.request_id)

    async def metadata_handler(loaded: Loaded, call: Call) -> Reply:
        return json_reply(oip.model_metadata(loaded.info, server.routing.versions))

    def on_model(suffix: str, method: str, handler, **options) -> None:
        """One route under both the model's path and its versioned path."""
        async def route(request: Request) -> Response:
            path = request.path_params
            return await answer(server, request, OIP, handler,
                                select=_oip_select(path["name"], path.get("version")), **options)

        for model in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            app.add_api_route(model + suffix, route, methods=[method])

    on_model("", "GET", metadata_handler, predicts=False)
    on_model("/ready", "GET", _ready, predicts=False, keyed=False)
    on_model("/infer", "POST", infer_handler)

    @app.get("/v2/health/live")
    async def live(request: Request) -> Response:
        return await _probe(server, request, OIP, _constant({"live": True}))

    @app.get("/v2/health/ready")
    async def ready(request: Request) -> Response:
        return await _probe(server, request, OIP, _constant({"ready": True}))

    @app.get("/v2")
    async def server_metadata(request: Request) -> Response:
        return await _probe(server, request, OIP, _constant(oip.server_metadata()))


def _add_kserve_v1(app: FastAPI, server: ModelServer) -> None:
    def select(name: str):
        def pick(routing: Routing) -> Loaded:
            kserve_v1.check_model(name, routing.champion.info)
            return routing.pick()
        return pick

    async def predict_handler(loaded: Loaded, call: Call) -> Reply:
        rows = kserve_v1.parse_predict(call.body, loaded.features)
        labels, proba = await server.predict_rows(loaded, rows, call.request_id, call.started)
        return kserve_v1.predict_reply(labels, proba, loaded.info, call.request_id)

    async def list_handler(loaded: Loaded, call: Call) -> Reply:
        return json_reply(kserve_v1.models_list(loaded.info))

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        return await _probe(server, request, KSERVE_V1, list_handler)

    # before /v1/models/{name}, whose {name} would also match "NAME:predict": a wrong method on
    # this path then answers 405 with `Allow: POST`
    @app.post("/v1/models/{name}:predict")
    async def predict(request: Request, name: str) -> Response:
        return await answer(server, request, KSERVE_V1, predict_handler, select=select(name))

    @app.get("/v1/models/{name}")
    async def model_status(request: Request, name: str) -> Response:
        return await answer(server, request, KSERVE_V1, _ready, select=select(name),
                            predicts=False, keyed=False)


def _oip_select(name: str, version: str | None):
    def pick(routing: Routing) -> Loaded:
        oip.check_model(name, version, routing.champion.info, routing.versions)
        return routing.served(version)
    return pick


async def _ready(loaded: Loaded, call: Call) -> Reply:
    """OIP's model ready and KServe v1's model status: the model is loaded, else no answer."""
    return json_reply({"name": loaded.name, "ready": True})


def _constant(body: dict):
    async def handler(loaded: Loaded, call: Call) -> Reply:
        return json_reply(body)
    return handler


async def _probe(server: ModelServer, request: Request, protocol: Protocol, handler
                 ) -> Response:
    """A GET that needs no key and counts in no metric, answered by the champion."""
    return await answer(server, request, protocol, handler, select=champion, predicts=False,
                        keyed=False)

