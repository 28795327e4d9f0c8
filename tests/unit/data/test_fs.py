"""data.fs: every s3:// path goes to AWS_ENDPOINT_URL; an unreachable storage exits 2 naming
`storage` in seconds, before anything starts."""

from __future__ import annotations

import socket
import time

import pytest

from runtime.data import fs
from runtime.errors import InputError


def _closed_port() -> int:
    with socket.socket() as s:  # bound, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _options(filesystem) -> dict:
    return filesystem.__reduce__()[1][0]  # pyarrow's own options, as it pickles them


def test_s3_uris_use_aws_endpoint_url(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    filesystem, path = fs.open_uri("s3://bucket/mlrt/")
    assert path == "bucket/mlrt" and filesystem.type_name == "s3"
    assert _options(filesystem)["endpoint_override"] == "127.0.0.1:9000"
    assert _options(filesystem)["scheme"] == "http"
    # the S3-specific variable wins, as in boto3
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9001")
    assert _options(fs.open_uri("s3://bucket")[0])["endpoint_override"] == "127.0.0.1:9001"


def test_local_paths_and_ray_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    filesystem, path = fs.open_uri("store")
    assert filesystem.type_name == "local" and path == str(tmp_path / "store")
    assert fs.ray_paths(["a.parquet", "b.parquet"]) == (["a.parquet", "b.parquet"], None)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    paths, filesystem = fs.ray_paths(["s3://b/x.parquet"])
    assert paths == ["b/x.parquet"] and filesystem.type_name == "s3"
    with pytest.raises(InputError, match="cannot mix local paths and URIs"):
        fs.ray_paths(["a.parquet", "s3://b/x.parquet"])
    assert fs.train_storage("store") == (str(tmp_path / "store"), None)


def test_an_unreachable_s3_endpoint_is_named_in_seconds(monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    began = time.monotonic()
    with pytest.raises(InputError) as refused:
        fs.check_storage("s3://bucket/mlrt")
    assert time.monotonic() - began < 30
    message = str(refused.value)
    assert message.startswith("storage: cannot reach s3://bucket/mlrt")
    assert f"AWS_ENDPOINT_URL=http://127.0.0.1:{port}" in message
    fs.check_storage(".mlrt")  # a local folder is made later: nothing to check
