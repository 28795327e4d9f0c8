"""The one way mlrt opens `storage` and other URIs: a pyarrow filesystem and a path on it.

    fs, path = open_uri("s3://bucket/mlrt")         # S3FileSystem, "bucket/mlrt"
    fs, path = open_uri(".mlrt")                    # LocalFileSystem, "/abs/.mlrt"
    check_storage("s3://bucket/mlrt")               # exit 2 naming `storage` when unreachable

Why one helper: pyarrow 25's `FileSystem.from_uri` reads AWS_ENDPOINT_URL too, but not
AWS_ENDPOINT_URL_S3, and it leaves the region to discovery and timeouts at the SDK's
defaults (ten retries with back-off against an endpoint that is down). Here every s3://
filesystem gets the endpoint (AWS_ENDPOINT_URL_S3 wins, as in boto3), a region, path-style
bucket addressing, and, for the storage check, short timeouts; Ray Train and Tune get the
same filesystem object (`storage_filesystem`), Ray Data readers and writers too.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from runtime.errors import InputError

# A storage check should answer in seconds, not after the SDK's ten retries with back-off.
CHECK_TIMEOUT_S = 5.0


def is_uri(path: str) -> bool:
    return "://" in path


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_filesystem(*, timeout: float | None = None, retries: int | None = None):
    """An S3FileSystem for AWS_ENDPOINT_URL (if set) with the credentials and region from the
    environment, as the AWS SDK reads them."""
    from pyarrow import fs

    options: dict = {}
    endpoint = s3_endpoint()
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(endpoint_override=parsed.netloc + parsed.path.rstrip("/"),
                       scheme=parsed.scheme or "https")
        # a private endpoint has no region to discover: the SDK's default, like boto3
        options["region"] = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get(
            "AWS_REGION") or "us-east-1"
        # bucket names as paths: what S3-compatible stores on one host name serve
        options["force_virtual_addressing"] = False
    if timeout is not None:
        options.update(connect_timeout=timeout, request_timeout=timeout)
    if retries is not None:
        options["retry_strategy"] = fs.AwsStandardS3RetryStrategy(max_attempts=retries)
    return fs.S3FileSystem(**options)


def open_uri(uri: str, **s3_options):
    """(filesystem, path) for a local path or a URI. s3:// honours AWS_ENDPOINT_URL; other
    schemes (gs://, hdfs://, file://) are pyarrow's own."""
    from pyarrow import fs

    if not is_uri(uri):
        return fs.LocalFileSystem(), os.path.abspath(uri)
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "s3a"):
        return s3_filesystem(**s3_options), (parsed.netloc + parsed.path).rstrip("/")
    return fs.FileSystem.from_uri(uri)


def train_storage(uri: str) -> tuple[str, object | None]:
    """Ray Train / Tune `(storage_path, storage_filesystem)` for `uri`: a local folder as an
    absolute path and no filesystem (Ray's own), a URI as a path on its filesystem."""
    if not is_uri(uri):
        return os.path.abspath(uri), None
    filesystem, path = open_uri(uri)
    return path, filesystem


def check_storage(storage: str, field: str = "storage") -> None:
    """Fail fast (InputError, exit 2, naming `field`) when a URI storage cannot be reached or
    read with the credentials at hand, so that a typo in the endpoint or a missing bucket is
    not found by the first checkpoint minutes into training. Local folders are made later."""
    if not is_uri(storage):
        return
    from pyarrow import fs

    where = f" (AWS_ENDPOINT_URL={s3_endpoint()})" if storage.startswith("s3") and \
        s3_endpoint() else ""
    try:
        filesystem, path = open_uri(storage, timeout=CHECK_TIMEOUT_S, retries=1) \
            if storage.startswith("s3") else open_uri(storage)
        bucket = path.split("/", 1)[0]
        info = filesystem.get_file_info(bucket)
        if info.type == fs.FileType.NotFound:
            raise InputError(f"{field}: {storage}: bucket '{bucket}' does not exist{where}")
        filesystem.get_file_info(path)
    except InputError:
        raise
    except (OSError, ValueError) as e:  # unreachable endpoint, refused credentials, bad URI
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{field}: cannot reach {storage}{where}: {reason}") from e


def ray_paths(paths: list[str]) -> tuple[list[str], object | None]:
    """Paths and `filesystem` for Ray Data's readers and writers: URIs as paths on mlrt's
    filesystem (one filesystem: Ray takes one per read), local paths as they are."""
    uris = [p for p in paths if is_uri(p)]
    if not uris:
        return list(paths), None
    if len(uris) != len(paths) or len({urlparse(p).scheme for p in uris}) != 1:
        raise InputError(f"cannot mix local paths and URIs (or two schemes) in one read: "
                         f"{', '.join(paths)}")
    opened = [open_uri(p) for p in paths]
    return [path for _, path in opened], opened[0][0]
