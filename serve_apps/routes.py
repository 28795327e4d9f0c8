"""The FastAPI routes of one replica (built after its model is loaded, so /docs shows the
served model's own features), and the one helper every route goes through (`answer`).

`answer` does what every protocol shares: the request id, the API key, the body-size limit,
the version pick (canary), the metrics, the `x-model-version` and `x-request-id` headers and
the Response; the protocol's handler only turns the request into a `Reply` (serve_apps/
protocols/, over `ModelServer.predict_rows`). Every client error is JSON in the protocol's own
shape with a 4xx status; nothing a client sends turns into a 500.

The prediction routes of a fixed path (`POST /predict`, `/invocations`) are answered by `App`
itself, before FastAPI's middleware stack, router and dependency solver: on a single-row request
those were a fifth of the replica's CPU (py-spy at c1), more than the model's forward pass. Only
the path is matched; the endpoint, and so every status, header and error, is the same one
FastAPI's route calls (tests/unit/serve_apps/test_routes.py compares the two ways in).

Request ids are Ray Serve's: its proxy (or a replica's direct ingress) passes a client's
`x-request-id` on, or sets a new UUID4 when there is none, and echoes it in the response's
`x-request-id` header (Serve's RequestIdMiddleware; its logs name the same id). mlrt uses that
id when it is 1-128 printable ASCII characters without spaces (`[!-~]`: safe in a header, a
log line, a CSV cell and a URL), names it in the body and hands it to the prediction hook; a
client's id that is not is a 422 naming the header. Outside Serve (a bare ASGI server, tests)
a request without the header gets a new UUID4 and the header is set here.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from serve_apps.protocols import Reply
from serve_apps.protocols._common import json_reply, mlrt_fields
from serve_apps.validate import BadRequest, parse_body

if TYPE_CHECKING:
    from serve_apps.predictor import ModelServer
    from serve_apps.routing import Loaded, Routing

logger = logging.getLogger("mlrt.serve")
REQUEST_ID = "x-request-id"
_SANE_ID = re.compile(r"[!-~]{1,128}")


@dataclass(frozen=True)
class Call:
    """One request as a protocol handler sees it."""

    request: Request
    request_id: str
    started: float
    body: bytes


@dataclass(frozen=True)
class Protocol:
    """A protocol's name in the metrics and its error shape (a BadRequest + the request id,
    None when the id itself was refused -> Reply)."""

    name: str
    error: Callable[[BadRequest, str | None], Reply]


Handler = Callable[["Loaded", Call], Awaitable[Reply]]
Endpoint = Callable[[Request], Awaitable[Response]]


class App(FastAPI):
    """FastAPI, with a direct way in for the POST routes of a fixed path (`direct_post`)."""

    def __init__(self, **options):
        super().__init__(**options)
        self.direct: dict[str, Endpoint] = {}

    def direct_post(self, path: str) -> Callable[[Endpoint], Endpoint]:
        """`@app.post(path)`, and the same endpoint answers without FastAPI's routing."""
        def register(endpoint: Endpoint) -> Endpoint:
            self.direct[path] = endpoint
            return self.post(path)(endpoint)
        return register

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path, root = scope["path"], scope.get("root_path", "")
            # Serve (and uvicorn) keep the mount point in both `root_path` and `path`
            endpoint = self.direct.get(path[len(root):] if path.startswith(root) else path)
            if endpoint is not None:
                scope["app"] = self  # as Starlette sets it, for `request.app`
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

Select = Callable[["Routing"], "Loaded"]


def request_id(header: str | None) -> str:
    """The request's id: its `x-request-id` when sane, a new UUID4 when there is none. Raises
    BadRequest(422) naming the header."""
    if header is None:
        return str(uuid.uuid4())
    if not _SANE_ID.fullmatch(header):
        raise BadRequest(422, f"header {REQUEST_ID} must be 1-128 printable ASCII characters "
                              f"without spaces, got {len(header)} character(s) "
                              f"{header[:40]!r}", header=REQUEST_ID)
    return header


def _pick(routing: Routing) -> Loaded:
    return routing.pick()


def champion(routing: Routing) -> Loaded:
    return routing.champion


async def answer(server: ModelServer, request: Request, protocol: Protocol, handle: Handler, *,
                 select: Select = _pick, predicts: bool = True, keyed: bool = True) -> Response:
    """Run one request through `handle`. `select` picks the version (404 for a model or
    version not served); `predicts`: read the body (size-limited) and count the request in the
    metrics; `keyed`: the API key is required (probes are not keyed)."""
    started = time.perf_counter()
    routing = server.routing  # one snapshot: an alias move mid-request changes nothing here
    loaded = routing.champion  # until a version is picked (the canary's errors are its own)
    incoming = request.headers.get(REQUEST_ID)
    rid: str | None = None  # none usable while the header is bad
    try:
        rid = request_id(incoming)
        if keyed:
            server.check_key(request.headers.get("authorization"))
        loaded = select(routing)
        body = await _read_body(request, server.args.serve.max_payload_bytes) if predicts \
            else b""
        reply = await handle(loaded, Call(request, rid, started, body))
    except BadRequest as e:
        reply = protocol.error(e, rid)
    except Exception:  # noqa: BLE001 - a bug, not the client: logged, answered as a 500
        logger.exception("request %s failed", rid)
        reply = protocol.error(BadRequest(500, f"internal error answering request {rid}; the "
                                               "replica's log has the traceback"), rid)
    if predicts:
        server.record(loaded, protocol.name, reply.status, started)
    headers = {**reply.headers, "x-model-version": loaded.version}
    if incoming is None and rid is not None:  # else Serve echoes the request's own header
        headers[REQUEST_ID] = rid
    if reply.status == 401:
        headers["www-authenticate"] = "Bearer"
    return Response(reply.body, status_code=reply.status, media_type=reply.media_type,
                    headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"payload of {declared} bytes is above the limit of {limit} "
                              "(serve.max_payload_bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"payload is above the limit of {limit} bytes "
                                  "(serve.max_payload_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


async def health_handler(loaded: Loaded, call: Call) -> Reply:
    """/health (and MLflow's /ping): 200 naming the version, once the model is loaded."""
    return json_reply({"status": "ok", "model": loaded.name, "version": loaded.version})


def _detail(e: BadRequest, rid: str | None) -> Reply:
    body = {"detail": e.message} if rid is None else {"detail": e.message, "request_id": rid}
    return json_reply(body, e.status)


PREDICT = Protocol("predict", _detail)


def build_fastapi(server: ModelServer) -> App:
    from serve_apps import feedback, openapi, protocol_routes

    app = App(title=f"mlrt: {server.routing.champion.name}",
              description="Predictions from a registered mlrt model (with its own "
                          "preprocessing), over mlrt's /predict, MLflow's /invocations, "
                          "the Open Inference Protocol v2 and KServe v1.")

    async def predict_handler(loaded: Loaded, call: Call) -> Reply:
        rows = parse_body(call.body, loaded.features)
        labels, proba = await server.predict_rows(loaded, rows, call.request_id, call.started)
        return json_reply(mlrt_fields(labels, proba, loaded.info, call.request_id))

    async def metadata_handler(loaded: Loaded, call: Call) -> Reply:
        return json_reply(server.metadata())

    @app.direct_post("/predict")
    async def predict(request: Request) -> Response:
        return await answer(server, request, PREDICT, predict_handler)

    @app.get("/health")
    async def health(request: Request) -> Response:
        return await answer(server, request, PREDICT, health_handler, select=champion,
                            predicts=False, keyed=False)

    @app.get("/metadata")
    async def metadata(request: Request) -> Response:
        return await answer(server, request, PREDICT, metadata_handler, select=champion,
                            predicts=False)

    protocol_routes.add_routes(app, server)
    feedback.add_route(app, server)

    built_for: list[tuple[str, ...]] = []

    def document() -> dict:
        # rebuilt when an alias moves: another version may take other features
        if app.openapi_schema is None or built_for != [server.routing.versions]:
            app.openapi_schema = openapi.document(app.title, app.description, server)
            built_for[:] = [server.routing.versions]
        return app.openapi_schema

    app.openapi = document
    return app
