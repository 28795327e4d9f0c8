"""Request capture and labels in one replica: `serve.capture` wired to the writers of
runtime/monitoring/capture.py, the replica's metrics and `POST {route}/feedback`.

ModelServer holds one `ReplicaCapture` (None when capture is off): `_on_prediction` hands it
each success, `__del__` (Serve's graceful shutdown) closes it, so the queue is written before
the replica goes. `check_capture` runs before Ray starts (`mlrt serve`, `mlrt deploy`): an
`exclude`/`hash` name the model does not take, a feature named like a captured row's own
columns, or hashing without its salt exits 2 naming `serve.capture...`.

Metrics (Ray's Prometheus endpoint, like the others of serve_apps/predictor.py):
`mlrt_capture_rows` (rows written) and `mlrt_capture_dropped` (rows lost: queue_full,
sink_error, closed), each by model and kind (captures, labels).
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from runtime.errors import InputError
from runtime.monitoring.capture import (
    BatchWriter,
    CaptureRows,
    Chunk,
    ParquetSink,
    label_tables,
    new_writer_id,
)
from runtime.monitoring.layout import ARMS, CAPTURE_META, captures_root, labels_root

if TYPE_CHECKING:
    import numpy as np

    from runtime.spec import Capture
    from serve_apps.config import AppArgs
    from serve_apps.routing import Loaded, Routing, VersionRouter

logger = logging.getLogger("mlrt.serve")


def check_capture(capture: Capture | None, features: list[str] | tuple[str, ...]) -> None:
    """The capture settings against the served model's features and the environment. Raises
    InputError (exit 2) naming the field."""
    if capture is None:
        return
    clash = [f for f in features if f in CAPTURE_META]
    if clash:
        raise InputError(f"serve.capture: the model's feature(s) {clash} clash with the columns "
                         f"every captured row has ({', '.join(CAPTURE_META)})")
    for field in ("exclude", "hash"):
        for i, name in enumerate(getattr(capture, field)):
            if name not in features:
                raise InputError(f"serve.capture.{field}[{i}]: '{name}' is not a feature of the "
                                 f"served model (it takes {list(features)[:8]}...)")
    if capture.hash and not os.environ.get(capture.salt_env):
        raise InputError(f"serve.capture.salt_env: set {capture.salt_env} to the salt of the "
                         "hashed features (it is never stored with the captures)")


def salt_env(capture: Capture | None) -> dict[str, str]:
    """What replicas need from this environment: the salt, when features are hashed."""
    if capture is None or not capture.hash or capture.salt_env not in os.environ:
        return {}
    return {capture.salt_env: os.environ[capture.salt_env]}


def _metrics() -> dict:
    from ray.serve import metrics

    tags = ("model", "kind")
    return {
        "rows": metrics.Counter("mlrt_capture_rows", description="Captured rows (and labels) "
                                "written to storage.", tag_keys=tags),
        "dropped": metrics.Counter("mlrt_capture_dropped", description="Captured rows (and "
                                   "labels) dropped: queue full, sink down, replica closing.",
                                   tag_keys=(*tags, "reason")),
    }


class ReplicaCapture:
    """One replica's capture and label writers (one thread each, bounded queues)."""

    def __init__(self, capture: Capture, storage: str, model: str, regression: bool):
        salt = os.environ.get(capture.salt_env, "").encode()
        if capture.hash and not salt:  # fail closed: never store a hashable id in clear
            raise RuntimeError(f"serve.capture.salt_env: {capture.salt_env} is not set in the "
                               "replica's environment")
        self.capture, self.model, self.regression = capture, model, regression
        self.rows = CaptureRows(capture.sample, capture.exclude, capture.hash, salt)
        metrics = _metrics()
        writer = new_writer_id()
        self.writers = {kind: BatchWriter(
            ParquetSink(root(storage, model), writer), to_tables, queue_rows=capture.queue_rows,
            batch_rows=capture.batch_rows, flush_s=capture.flush_s, name=f"{model} {kind}",
            on_written=_counted(metrics["rows"], model, kind),
            on_dropped=_dropped(metrics["dropped"], model, kind))
            for kind, root, to_tables in (
                ("captures", captures_root, self.rows.tables),
                ("labels", labels_root, lambda chunks: label_tables(chunks, regression)))}

    def on_prediction(self, loaded: Loaded, routing: Routing, registry: VersionRouter,
                      request_id: str, rows: Any, labels: np.ndarray, proba: np.ndarray | None,
                      latency_ms: float) -> None:
        """Queue one request's rows; never blocks (a full queue drops and counts them). The
        arm: canary when `loaded` is the version the canary split picks now."""
        canary = routing.challenger is not None and loaded.version == routing.challenger.version
        arm = ARMS[1] if canary else ARMS[0]
        alias = registry.canary.alias if canary else registry.alias
        keep = self.rows.sampled(len(labels))
        n = len(labels) if keep is None else len(keep)
        if n == 0:
            return
        now = time.time_ns()
        arrival = now - int(latency_ms * 1e6)
        chunk = Chunk(request_id, arrival, loaded.name, loaded.version, alias, arm,
                      loaded.features.names, loaded.features.categorical, rows, labels, proba,
                      latency_ms, keep)
        self.writers["captures"].offer(chunk, n, arrival)

    def add_labels(self, request_ids: list[str], labels: list[Any]) -> int:
        """Queue checked labels (serve_apps/feedback.py); how many were accepted (all or none:
        a full queue drops them, counted, and the answer says 0)."""
        now = time.time_ns()
        ok = self.writers["labels"].offer((request_ids, labels, now), len(request_ids), now)
        return len(request_ids) if ok else 0

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


def from_args(args: AppArgs, model: str, regression: bool) -> ReplicaCapture | None:
    capture = args.serve.capture
    if capture is None:
        return None
    return ReplicaCapture(capture, args.storage or ".mlrt", model, regression)


def _counted(counter, model: str, kind: str):
    def inc(n: int) -> None:
        counter.inc(n, tags={"model": model, "kind": kind})
    return inc


def _dropped(counter, model: str, kind: str):
    def inc(n: int, reason: str) -> None:
        counter.inc(n, tags={"model": model, "kind": kind, "reason": reason})
    return inc
