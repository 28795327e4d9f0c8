"""`mlrt submit`'s checks before anything is uploaded, without a cluster (the e2e tests run the
same checks against a real one)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from runtime.cluster.preflight import (
    ClusterResources,
    UploadSize,
    job_tracking_uri,
    preflight,
    storage_warning,
)
from runtime.cluster.submit import (
    auth_token,
    entrypoint,
    job_excludes,
    measure_upload,
)
from runtime.errors import InputError
from runtime.spec import load_spec

ROOT = Path(__file__).parents[3]
ONE_NODE = ClusterResources(node_cpus=(8.0,), node_gpus=(0.0,))
TWO_NODES = ClusterResources(node_cpus=(4.0, 4.0), node_gpus=(0.0, 1.0))
SMALL_UPLOAD = UploadSize(total=1000, by_entry={"jobs": 1000}, limit=512 * 1024**2)


def spec(*overrides: str):
    return load_spec(ROOT / "jobs" / "digits.yaml", overrides)


def test_a_spec_that_fits_passes():
    assert preflight(spec(), ONE_NODE, SMALL_UPLOAD) == []
    shared = spec("storage=/mnt/nfs/mlrt", "runtime.shared_storage=true")
    assert preflight(shared, TWO_NODES, SMALL_UPLOAD) == []
    assert preflight(spec("storage=s3://bucket/mlrt",
                          "runtime.env_vars={MLFLOW_TRACKING_URI: 'http://mlflow:5000'}"),
                     TWO_NODES, SMALL_UPLOAD) == []


def test_too_many_cpus_names_the_fields_and_what_the_cluster_has():
    problems = preflight(spec("train.workers=9"), ONE_NODE, SMALL_UPLOAD)
    assert problems == ["train.workers: 9 workers x 1 CPUs = 9 CPUs; the cluster has 8 CPUs on "
                        "1 node(s), at most 8 on one"]
    (wide,) = preflight(spec("train.cpus_per_worker=6", "storage=s3://b/m",
                             "runtime.env_vars={MLFLOW_TRACKING_URI: 'http://m'}"),
                        TWO_NODES, SMALL_UPLOAD)
    assert wide.startswith("train.cpus_per_worker: 6 CPUs per worker do not fit on any node")


def test_gpus_and_concurrent_trials_are_checked():
    (gpu,) = preflight(spec("train.use_gpu=true"), ONE_NODE, SMALL_UPLOAD)
    assert gpu == "train.use_gpu: 2 workers need 2 GPUs; the cluster has 0"
    tuned = spec("tune={space: {train.lr: {loguniform: [0.0001, 0.1]}}, concurrent: 4}")
    assert preflight(tuned, ONE_NODE, SMALL_UPLOAD) == []  # 4 trials x 2 CPUs = 8: fits
    assert preflight(spec("tune={space: {train.lr: {loguniform: [0.0001, 0.1]}}, "
                          "concurrent: 5}"), ONE_NODE, SMALL_UPLOAD) == [
        "tune.concurrent: 5 trials x 2 CPUs = 10 CPUs; the cluster has 8 CPUs on 1 node(s), "
        "at most 8 on one"]


def test_local_storage_and_sqlite_on_many_nodes_are_refused():
    problems = preflight(spec(), TWO_NODES, SMALL_UPLOAD)
    assert problems[0].startswith("storage: '.mlrt' is a local path but the cluster has 2 "
                                  "nodes")
    assert "s3://, gs://, or an NFS path" in problems[0]
    assert problems[1].startswith("MLflow tracking URI sqlite:///.mlrt/mlflow.db is a local "
                                  "sqlite file on a 2-node cluster")
    (sqlite,) = preflight(spec("storage=/mnt/nfs", "runtime.shared_storage=true",
                               "runtime.env_vars={MLFLOW_TRACKING_URI: 'sqlite:////tmp/x.db'}"),
                          TWO_NODES, SMALL_UPLOAD)
    assert sqlite.startswith("MLflow tracking URI sqlite:////tmp/x.db is a local sqlite file")


def test_no_cluster_check_keeps_only_the_upload_check():
    big = UploadSize(total=600 * 1024**2, by_entry={"data": 590 * 1024**2, "jobs": 10},
                     limit=512 * 1024**2)
    assert preflight(spec("train.workers=99"), None, SMALL_UPLOAD) == []
    (problem,) = preflight(spec("train.workers=99"), None, big)
    assert problem.startswith("working dir: the upload is 600.0 MiB, over Ray's limit of "
                              "512.0 MiB; largest: data (590.0 MiB), jobs (0.0 MiB)")


def test_measure_upload_skips_the_excluded_folders(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "a.yaml").write_text("x" * 100)
    for skipped in (".git", ".venv", ".mlrt", "__pycache__"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "big").write_bytes(b"0" * 10_000)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw.csv").write_text("y" * 500)
    s = spec("runtime.excludes=[data/]")
    upload = measure_upload(tmp_path, job_excludes(s, tmp_path))
    assert upload.by_entry == {"jobs": 100} and upload.total == 100


def test_storage_inside_the_working_dir_is_not_uploaded(tmp_path):
    assert "/.mlrt" in job_excludes(spec(), tmp_path)
    assert "/out/store" in job_excludes(spec(f"storage={tmp_path}/out/store"), tmp_path)
    assert not any("elsewhere" in e for e in job_excludes(spec("storage=/elsewhere"), tmp_path))


def test_entrypoint_quotes_overrides_for_the_jobs_shell():
    command = entrypoint("jobs/digits.yaml", ["train.epochs=3", "name=a b; rm -rf /"])
    assert shlex.split(command) == ["python", "-m", "runtime", "run", "jobs/digits.yaml",
                                    "--set", "train.epochs=3", "--set", "name=a b; rm -rf /"]


def test_token_lookup_follows_rays_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    assert auth_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert auth_token() == "from-home"
    (tmp_path / "tok").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert auth_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert auth_token() == "from-env"
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(InputError, match="RAY_AUTH_TOKEN_PATH=.*cannot read the token file"):
        auth_token()
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")

    def unreadable(self, *args, **kwargs):  # as for a non-root user without read permission
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", unreadable)
    with pytest.raises(InputError, match=r"auth_token: cannot read the Ray token file "
                                         r"\(Permission denied\)"):
        auth_token()


def test_tracking_uri_and_storage_warning():
    assert job_tracking_uri(spec()) == "sqlite:///.mlrt/mlflow.db"
    assert job_tracking_uri(spec("storage=s3://b/x")) == ""
    assert job_tracking_uri(spec("runtime.env_vars={MLFLOW_TRACKING_URI: 'http://m'}")) == \
        "http://m"
    assert "lands inside the job's temporary copy" in storage_warning(spec())
    assert storage_warning(spec("storage=/mnt/nfs")) is None
    assert storage_warning(spec("storage=s3://b/x")) is None


def test_placement_is_pack_or_spread():
    from runtime.spec import SpecError

    assert spec().train.placement == "pack"
    assert spec("train.placement=spread").train.placement == "spread"
    with pytest.raises(SpecError, match="train.placement: must be 'pack' or 'spread', got 'wide'"):
        spec("train.placement=wide")


def test_where_it_runs_does_not_change_the_spec_hash():
    assert spec().spec_hash() == spec("runtime.pip=[x]", "cluster.image=y").spec_hash()
    assert spec().spec_hash() != spec("train.epochs=3").spec_hash()


def test_an_address_that_is_not_a_job_server_is_a_clear_error():
    """Ray's client raises RuntimeError when something else answers (e.g. Serve on :8000)."""
    from runtime.cluster.submit import _connect

    class NotRay:
        def __init__(self, address, headers=None):
            raise RuntimeError("Version check returned 404.\nJobs API is not supported")

    with pytest.raises(InputError, match=r"http://h:8000: not a Ray job server \(Ray said: "
                                         r"Version check returned 404.\); give the dashboard"):
        _connect(NotRay, "http://h:8000", {})


def test_object_store_size_comes_from_the_env_or_the_memory_ray_sees(monkeypatch):
    from runtime.cluster.connect import DEFAULT_OBJECT_STORE_BYTES, default_object_store_bytes

    monkeypatch.setenv("MLRT_OBJECT_STORE_BYTES", "2G")
    with pytest.raises(InputError, match="MLRT_OBJECT_STORE_BYTES: expected a number of bytes, "
                                         "got '2G'"):
        default_object_store_bytes()
    monkeypatch.setenv("MLRT_OBJECT_STORE_BYTES", str(300 * 1024**2))
    assert default_object_store_bytes() == 300 * 1024**2
    monkeypatch.delenv("MLRT_OBJECT_STORE_BYTES")
    assert 0 < default_object_store_bytes() <= DEFAULT_OBJECT_STORE_BYTES
