"""One write per response at a replica's HTTP server, so a replica that dies mid-response sends
either all of it or nothing.

uvicorn (the server of Serve's direct ingress) writes a response's status line and headers to
the socket on `http.response.start` and its body on `http.response.body`: two `send` calls,
some Python apart. A replica SIGKILLed between the two has sent a response head whose body
never comes. HAProxy has already passed that head to the client, so it cannot replay the
request on another replica (its `retry-on` covers a connection refused or closed before any
response byte), and the client gets a truncated response: 1 of 16,884 requests on a CI run of
tests/e2e/test_serve_chaos.py. With the head held back until the body, the socket sees one
write; a replica killed before it sends nothing, which HAProxy replays (`empty-response`).

`_Held` holds a connection's writes and hands them to the socket as one when the response is
complete (uvicorn's `on_response_complete`, called right after the last body write), when the
connection closes, or at the next turn of the event loop (a streamed response, whose chunks
are awaited apart, still goes out chunk by chunk).

The same protocol also marks the replica's direct POST routes (`/predict`, `/invocations`:
`unwatch`, from the routes that `App.direct_post` registered) with Serve's own
`x-request-disconnect-disabled: ?1`. For a request without it, Serve's direct ingress starts a
task that reads the body into a queue and watches for the client going away, runs the handler
in a second task and waits on both (ray/serve/_private/replica.py, `_direct_ingress_asgi`):
two extra tasks per request on the replica's one event loop, which at c64 spread the requests
out so that the batcher sees them one at a time. A predict request is short and, once
in a batch, cannot be called back, so watching for its client's disconnect buys nothing; the
header makes Serve await the handler directly. Other routes keep Serve's watch.
"""

from __future__ import annotations

import asyncio

from ray.serve._private.constants import SERVE_HTTP_REQUEST_DISCONNECT_DISABLED_HEADER
from uvicorn import config as uvicorn_config
from uvicorn.protocols.http.auto import AutoHTTPProtocol

PROTOCOL = f"{__name__}:OneWriteHTTP"
UNWATCHED = (SERVE_HTTP_REQUEST_DISCONNECT_DISABLED_HEADER.encode(), b"?1")  # as Serve reads it
_unwatched: tuple[str, ...] = ()  # path endings (the mount point comes before them)


class _Held:
    """An asyncio transport whose writes wait for `flush` (see the module's text); the rest is
    the transport's own."""

    __slots__ = ("_transport", "_loop", "_held", "_due")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._due = False  # a flush is scheduled for the loop's next turn

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._held.append(data)
        if not self._due:
            self._due = True
            self._loop.call_soon(self._on_turn)

    def writelines(self, lines) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        held = self._held
        if held:
            self._held = []
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def _on_turn(self) -> None:
        self._due = False
        self.flush()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class OneWriteHTTP(AutoHTTPProtocol):
    """uvicorn's HTTP protocol (httptools, else h11) over a `_Held` transport, its app called
    with the `unwatch`ed routes marked (see the module's text)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        app = self.app

        async def marked(scope, receive, send) -> None:
            if (_unwatched and scope["type"] == "http" and scope["method"] == "POST"
                    and scope["path"].endswith(_unwatched)):
                scope["headers"].append(UNWATCHED)
            await app(scope, receive, send)

        self.app = marked

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_Held(transport, self.loop))

    def on_response_complete(self) -> None:
        self.transport.flush()
        super().on_response_complete()


def install() -> None:
    """Make `OneWriteHTTP` the protocol of every uvicorn server this process starts with the
    default `http="auto"`: Serve builds its direct-ingress server with the default, after the
    replica's constructor (which calls this) has run."""
    uvicorn_config.HTTP_PROTOCOLS["auto"] = PROTOCOL


def unwatch(paths) -> None:
    """POST requests to a path ending in one of `paths` skip Serve's disconnect watch (see the
    module's text)."""
    global _unwatched
    _unwatched = tuple(paths)
