"""Unit: a replica's HTTP server (uvicorn with serve_apps.wire installed, as in every replica)
sends a response whole or not at all (no Ray; a real uvicorn in a subprocess, raw sockets)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from serve_apps.local import free_port

# The app as a replica's would answer, in a uvicorn started the way Serve starts its direct
# ingress (uvicorn.Config with the default protocol, Server.serve). POST /die is a replica
# SIGKILLed after it sent its response's head and before its body, in one turn of the loop.
# /digits/... answers whether the request came with Serve's disconnect-disabled header.
SERVER = """
import asyncio, os, signal, sys
import uvicorn

if sys.argv[2] == "wire":
    from serve_apps import wire
    wire.install()
    wire.unwatch(["/predict", "/invocations"])  # as a replica's App.direct registers them

async def app(scope, receive, send):
    head = {"type": "http.response.start", "status": 200,
            "headers": [(b"content-type", b"text/plain")]}
    if scope["path"] == "/die":
        await send({**head, "headers": [(b"content-length", b"5")]})
        os.kill(os.getpid(), signal.SIGKILL)
    elif scope["path"].startswith("/digits/"):
        body = b"unwatched" if dict(scope["headers"]).get(
            b"x-request-disconnect-disabled") == b"?1" else b"watched"
        await send({**head, "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    elif scope["path"] == "/stream":
        await send(head)
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await asyncio.sleep(1.0)
        await send({"type": "http.response.body", "body": b"last"})
    else:
        await send({**head, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello"})

asyncio.run(uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]),
                                          lifespan="off", log_level="warning")).serve())
"""


@pytest.fixture(params=["wire", "plain"])
def server(request):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), request.param])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "no server"
                time.sleep(0.05)
        yield request.param, port
    finally:
        proc.kill()
        proc.wait()


def _request(port: int, raw: bytes, until: bytes | None = None) -> tuple[bytes, float]:
    """What the server sent until it closed (or until `until` came), and when that was, in s
    after the request."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        started, got = time.monotonic(), b""
        while until is None or until not in got:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        return got, time.monotonic() - started


def test_a_replica_killed_between_head_and_body_sends_nothing(server):
    kind, port = server
    got, _ = _request(port, b"POST /die HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
    if kind == "wire":  # an empty response: HAProxy replays the request on another replica
        assert got == b""
    else:  # uvicorn as it is: a head whose body never comes, which no proxy can replay
        assert got.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 5" in got
        assert got.endswith(b"\r\n\r\n")


def test_responses_are_whole_on_kept_alive_and_closed_connections(server):
    _, port = server
    get = b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n"
    got, _ = _request(port, get + get + get.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n"))
    assert got.count(b"HTTP/1.1 200 OK\r\n") == 3 and got.count(b"\r\n\r\nhello") == 3
    got, _ = _request(port, b"GET /ok HTTP/1.1\r\nhost: x\r\ncontent-length: nope\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 400 Bad Request")  # uvicorn's own answer, then it closes


def test_a_streamed_response_is_sent_chunk_by_chunk_not_held_to_its_end(server):
    _, port = server
    got, after_s = _request(port, b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n", until=b"first")
    assert b"first" in got and b"last" not in got and after_s < 0.8  # the app sleeps 1 s
    got, _ = _request(port, b"GET /stream HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert got.endswith(b"5\r\nfirst\r\n4\r\nlast\r\n0\r\n\r\n")


def test_only_the_direct_post_routes_skip_serves_disconnect_watch(server):
    kind, port = server

    def asked(method: str, path: str) -> bytes:
        got, _ = _request(port, f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n"
                                "connection: close\r\n\r\n".encode())
        return got.rpartition(b"\r\n\r\n")[2]

    marked = {(m, p): asked(m, p) for m in ("POST", "GET")
              for p in ("/digits/predict", "/digits/invocations", "/digits/v2/models/m/infer")}
    expected = {key: b"unwatched" if kind == "wire" and key[0] == "POST"
                and not key[1].endswith("/infer") else b"watched" for key in marked}
    assert marked == expected
