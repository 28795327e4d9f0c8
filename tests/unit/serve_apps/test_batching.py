"""Unit: the replica's adaptive batching (ModelServer.predict_rows over Serve's own
@serve.batch, on a plain event loop; the model call is a stand-in that records each batch)."""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np
import pytest
import ray.serve.batching

from serve_apps.predictor import ModelServer

WAIT_S = 1.0
ROUNDS = 50


@pytest.fixture(autouse=True)
def _outside_a_replica(monkeypatch):
    # Serve checks the batch size against the replica's max_ongoing_requests: no replica here
    monkeypatch.setattr(ray.serve.batching._BatchQueue,
                        "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None)
    # the batcher's queue belongs to the first event loop that used it (a replica has one);
    # each test here runs its own
    lazy = ModelServer.func_or_class._predict_batch.set_max_batch_size.__self__
    monkeypatch.setattr(lazy, "_queue", None)


class Loaded:
    version = "1"


class _Bare(ModelServer.func_or_class):
    def __del__(self):  # Serve's ingress wrapper's is a coroutine nothing here would await
        pass


def _server(max_rows: int = 16):
    server = _Bare.__new__(_Bare)
    server.batches = []

    def run(loaded, requests):
        server.batches.append([len(r) for r in requests])
        time.sleep(0.0003)  # the model holds the loop, as a real one does
        return [(np.asarray(r)[:, 0], None) for r in requests]

    server._run = run
    server._on_prediction = lambda *args: None
    server._wait_s, server._max_rows = WAIT_S, max_rows
    server._inflight = server._unbatched_rows = server._wide_inflight = 0
    server._batch_size = max_rows
    server._predict_batch.set_max_batch_size(max_rows)
    server._predict_batch.set_batch_wait_timeout_s(WAIT_S)
    return server


async def _requests(server, sizes: list[int], spread_s: float, rng) -> list[float]:
    async def one(i: int, n: int) -> float:
        await asyncio.sleep(rng.random() * spread_s)
        start = time.perf_counter()
        rows = np.full((n, 1), float(i))
        labels, _ = await server.predict_rows(Loaded(), rows, str(i), start)
        assert labels.tolist() == [float(i)] * n  # its own rows' answer, batched or not
        return time.perf_counter() - start
    return await asyncio.gather(*(one(i, n) for i, n in enumerate(sizes)))


def test_single_rows_never_wait_out_wait_ms_for_rows_that_never_come():
    """Clients that wait for their answers (as these do) send nothing more: a batch that waited
    for rows the replica has not received would make its requests take WAIT_S."""
    server = _server()
    seconds = asyncio.run(_rounds(server, [1] * 8))
    assert max(seconds) < WAIT_S / 2, f"{sum(s > WAIT_S / 2 for s in seconds)} waited"
    assert any(len(b) > 1 for b in server.batches), "requests that came together were batched"
    assert server._unbatched_rows == 0 and server._inflight == 0


def test_wider_requests_batch_with_the_rest_and_wait_at_most_wait_ms():
    """With a request of several rows in flight a batch keeps its max_size (Serve refuses a
    batch's first request wider than its size), so it may wait out wait_ms, but no longer;
    every request gets its own rows' answer, and none is refused."""
    server = _server()
    seconds = asyncio.run(_rounds(server, [1, 1, 3, 1, 2, 1, 16, 1], rounds=10))
    assert max(seconds) < WAIT_S * 1.5
    assert any(sorted(b) != b or 3 in b for b in server.batches if len(b) > 1)
    assert server._unbatched_rows == 0 and server._wide_inflight == 0 and server._inflight == 0


async def _rounds(server, sizes: list[int], rounds: int = ROUNDS) -> list[float]:
    rng = random.Random(0)
    return [s for _ in range(rounds) for s in await _requests(server, sizes, 0.003, rng)]


def test_a_lone_request_and_a_full_batch_skip_the_batcher():
    server = _server(max_rows=4)
    rng = random.Random(1)
    asyncio.run(_requests(server, [1], 0, rng))
    asyncio.run(_requests(server, [4], 0, rng))
    assert server.batches == [[1], [4]]
