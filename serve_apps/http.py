"""The FastAPI routes of one replica (built after its model is loaded, so /docs shows the
served model's own features). Every client error is JSON `{"detail": message}` with a 4xx
status; nothing a client sends turns into a 500."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.responses import JSONResponse, Response

from serve_apps.validate import BadRequest

if TYPE_CHECKING:
    from serve_apps.predictor import ModelServer


def build_fastapi(server: ModelServer) -> FastAPI:
    app = FastAPI(title=f"mlrt: {server.routing.champion.name}",
                  description="Predictions from a registered mlrt model (with its own "
                              "preprocessing).")
    limit = server.args.serve.max_payload_bytes

    @app.post("/predict", summary="Predict rows",
              responses={401: {"description": "missing or wrong API key"},
                         413: {"description": "payload too large"},
                         422: {"description": "rows that do not fit the model"},
                         503: {"description": "queue full, retry later"}})
    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        loaded = server.routing.champion  # until a version is picked for this request
        try:
            server.check_key(request.headers.get("authorization"))
            body = await _read_body(request, limit)
            loaded = server.routing.pick()  # the canary's errors count against the canary
            result = await server.predict(loaded, body)
        except BadRequest as e:
            server.record(loaded, e.status, started)
            return _error(e)
        except Exception:
            server.record(loaded, 500, started)
            raise
        server.record(loaded, 200, started)
        return Response(json.dumps(result, separators=(",", ":")), media_type="application/json",
                        headers={"x-model-version": loaded.version})

    @app.get("/health", summary="200 when the model is loaded")
    async def health() -> dict:
        r = server.routing
        return {"status": "ok", "model": r.champion.name, "version": r.champion.version}

    @app.get("/metadata", summary="Name, version, alias, input schema, metrics, lineage")
    async def metadata(request: Request) -> Response:
        try:
            server.check_key(request.headers.get("authorization"))
        except BadRequest as e:
            return _error(e)
        return JSONResponse(server.metadata())

    def openapi() -> dict:
        # rebuilt when the alias moves: another version may take other features
        if app.openapi_schema is None or app.openapi_schema["info"]["version"] != \
                server.routing.champion.version:
            schema = get_openapi(title=app.title, version=server.routing.champion.version,
                                 description=app.description, routes=app.routes)
            body = server.request_schema()
            schema["paths"]["/predict"]["post"]["requestBody"] = {
                "required": True, "content": {"application/json": {"schema": body["body"]}}}
            schema.setdefault("components", {}).setdefault("schemas", {}).update(body["defs"])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


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


def _error(e: BadRequest) -> JSONResponse:
    headers = {"www-authenticate": "Bearer"} if e.status == 401 else None
    return JSONResponse({"detail": e.message}, status_code=e.status, headers=headers)
