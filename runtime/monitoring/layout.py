"""Where captured requests and labels live, and what a captured row holds: the one contract
between the replicas that write them (serve.capture, POST {route}/feedback) and `mlrt monitor`
that reads them.

    {storage}/captures/{model}/date=YYYY-MM-DD/{writer}-{first_time_ns}-{seq:06d}.parquet
    {storage}/labels/{model}/date=YYYY-MM-DD/{writer}-{first_time_ns}-{seq:06d}.parquet

`writer` is one replica's id (unique per process), so two replicas never write one name and a
file is complete once visible (written to a temporary name and renamed locally; one PUT on an
object store). `date=` is the UTC day of the file's first row: a reader of a time window lists
only the days it spans (a window filter on `time` does the rest).

A captured row (CAPTURE_META columns, then the features):

    request_id  string      the id the response named (body `request_id`, header x-request-id)
    time        timestamp   when the request arrived, UTC, microseconds
    model       string      registered model name
    version     string      the version that answered
    alias       string      the alias it was served through (champion, challenger, ...)
    arm         string      "stable" | "canary"
    prediction  string      the label as the response gave it, as text (regression: repr of float)
    probabilities list<double>  class probabilities in `classes` order; null for regression
    latency_ms  double      arrival to answer inside the replica
    <feature>   as received after validation (numbers double, categoricals string); excluded
                features absent, hashed ones the salted hash text (HASH_PREFIX...)

A label row: request_id string, label string (classification, category_key form) or double
(regression), time timestamp (when the label arrived). Several labels for one request: the last
one by `time` wins. Feature names that collide with CAPTURE_META are refused when capture is on.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

CAPTURE_META = ("request_id", "time", "model", "version", "alias", "arm", "prediction",
                "probabilities", "latency_ms")
LABEL_COLUMNS = ("request_id", "label", "time")
HASH_PREFIX = "sha256:"
ARMS = ("stable", "canary")

_WRITER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def captures_root(storage: str, model: str) -> str:
    return f"{storage.rstrip('/')}/captures/{model}"


def labels_root(storage: str, model: str) -> str:
    return f"{storage.rstrip('/')}/labels/{model}"


def day_dir(root: str, when: datetime) -> str:
    return f"{root}/date={when.astimezone(UTC):%Y-%m-%d}"


def file_name(writer: str, first_time_ns: int, seq: int) -> str:
    if not _WRITER.match(writer):
        raise ValueError(f"capture writer id {writer!r}: letters, digits, _ . - only")
    return f"{writer}-{first_time_ns}-{seq:06d}.parquet"
