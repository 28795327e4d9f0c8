"""The platform stack itself, as a platform team would check it before pointing mlrt at it:
the MLflow server keeps runs and model versions in PostgreSQL and artifacts in the bucket, the
S3 endpoint checks signatures, the containerised Ray runs jobs only with the token and has mlrt
installed, and nothing listens beyond loopback.

    make platform && .venv/bin/python -m pytest tests/platform -q
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

# boto3 and psycopg2 (the platform extra) are imported inside the tests: without the extra,
# collection still works and the tests skip for the absent stack instead of failing to import.

pytestmark = pytest.mark.platform
RAY_CLI = str(Path(sys.executable).with_name("ray"))  # the venv's: the image's Ray version


def _s3_client(stack, secret: str | None = None):
    import boto3
    from botocore.config import Config

    env = stack.env
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=secret or env["AWS_SECRET_ACCESS_KEY"],
                        region_name=env["AWS_DEFAULT_REGION"],
                        config=Config(retries={"max_attempts": 1},
                                      request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


@pytest.fixture(scope="module")
def logged_run(stack, tmp_path_factory):
    """One run with a param, a metric, an artifact and a registered model version, logged
    through the tracking server as any MLflow user does."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)
    name = f"platform-test-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(name)
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "lr", "0.01")
    client.log_metric(run.info.run_id, "accuracy", 0.93)
    folder = tmp_path_factory.mktemp("artifacts")
    (folder / "notes.txt").write_text("written through the tracking server\n")
    client.log_artifact(run.info.run_id, str(folder / "notes.txt"), artifact_path="docs")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/docs",
                                          run_id=run.info.run_id)
    return {"client": client, "name": name, "run_id": run.info.run_id,
            "experiment_id": experiment_id, "version": version.version}


def test_mlflow_server_keeps_runs_and_model_versions_in_postgresql(stack, logged_run):
    import psycopg2

    client = logged_run["client"]
    run = client.get_run(logged_run["run_id"])
    assert run.data.params == {"lr": "0.01"} and run.data.metrics == {"accuracy": 0.93}
    assert client.get_model_version(logged_run["name"], logged_run["version"]).run_id == \
        logged_run["run_id"]
    # the rows are in the stack's PostgreSQL, not in a file store next to the server
    url = stack.state["postgres_url"].replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(url) as db, db.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_uuid = %s", (logged_run["run_id"],))
        assert cursor.fetchone() == ("FINISHED",)
        cursor.execute("SELECT version FROM model_versions WHERE name = %s", (logged_run["name"],))
        assert cursor.fetchall() == [(int(logged_run["version"]),)]


def test_run_artifacts_land_in_the_bucket(stack, logged_run):
    s3 = _s3_client(stack)
    listing = s3.list_objects_v2(Bucket=stack.bucket, Prefix="mlflow/")
    keys = [item["Key"] for item in listing.get("Contents", [])]
    (key,) = [k for k in keys if logged_run["run_id"] in k and k.endswith("docs/notes.txt")]
    body = s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read()
    assert body == b"written through the tracking server\n"
    # and MLflow reads it back through its proxy from the same object
    client = logged_run["client"]
    names = [f.path for f in client.list_artifacts(logged_run["run_id"], "docs")]
    assert names == ["docs/notes.txt"]


def test_a_wrong_s3_secret_is_refused(stack):
    from botocore.exceptions import ClientError

    if stack.state["s3"]["kind"] != "ceph":
        pytest.skip("the stack fell back to moto's S3 server, which accepts any key")
    with pytest.raises(ClientError) as refused:
        _s3_client(stack, secret="not-the-secret").list_objects_v2(Bucket=stack.bucket)
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    # the right secret still works: the refusal was the signature, not the bucket
    assert _s3_client(stack).list_objects_v2(Bucket=stack.bucket)["Name"] == stack.bucket


JOB = ("import ray, runtime; ray.init(); "
       "print('mlrt-at', runtime.__file__); "
       "print('alive-nodes', sum(n['Alive'] for n in ray.nodes()))")


def _submit(stack, tmp_path, **env: str) -> subprocess.CompletedProcess:
    """`ray job submit` from the host venv, as a user would, with exactly `env` for auth (HOME
    is a fresh folder, so no ~/.ray/auth_token is picked up)."""
    clean = {k: v for k, v in stack.process_env().items()
             if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    return subprocess.run([RAY_CLI, "job", "submit", "--address", stack.env["RAY_ADDRESS"],
                           "--", "python", "-c", JOB],
                          env={**clean, "HOME": str(tmp_path), **env}, capture_output=True,
                          text=True, timeout=300, check=False)


def test_containerised_ray_runs_a_job_with_the_token_and_has_mlrt_installed(stack, tmp_path):
    done = _submit(stack, tmp_path, RAY_AUTH_MODE="token",
                   RAY_AUTH_TOKEN=stack.env["RAY_AUTH_TOKEN"])
    assert done.returncode == 0, done.stdout + done.stderr
    # mlrt is imported from the image (/app), not from this checkout; the worker has joined
    assert "mlrt-at /app/runtime/__init__.py" in done.stdout
    assert "alive-nodes 2" in done.stdout


@pytest.mark.parametrize("auth", [{}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}],
                         ids=["no-token", "wrong-token"])
def test_containerised_ray_refuses_a_job_without_the_right_token(stack, tmp_path, auth):
    done = _submit(stack, tmp_path, **auth)
    assert done.returncode != 0
    assert "AuthenticationError" in done.stderr + done.stdout
    assert "mlrt-at" not in done.stdout


def _listening_sockets(pids: list[int]) -> list[tuple[str, str, int]]:
    """(process name, ip, port) of every listening TCP and bound UDP socket of `pids` and all
    their descendants (a container's processes descend from its init pid)."""
    import psutil

    seen, sockets = set(), []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in family:
            if proc.pid in seen:
                continue
            seen.add(proc.pid)
            try:
                connections = proc.net_connections(kind="inet")
                name = proc.name()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            sockets += [(name, c.laddr.ip, c.laddr.port) for c in connections
                        if c.status == psutil.CONN_LISTEN or (c.status == psutil.CONN_NONE
                                                              and not c.raddr)]
    return sockets


def _is_loopback_v4(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if address.version == 6 and address.ipv4_mapped:  # gRPC's dual-stack sockets
        address = address.ipv4_mapped
    return address == ipaddress.ip_address("127.0.0.1")


def test_nothing_the_stack_started_listens_beyond_127_0_0_1(stack):
    pids = [rec["pid"] for rec in stack.state["processes"]]
    pids += [rec["pid"] for rec in stack.state["containers"]]
    sockets = _listening_sockets(pids)
    exposed = [s for s in sockets if not _is_loopback_v4(s[1])]
    assert exposed == [], f"bound beyond 127.0.0.1: {exposed}"
    # not vacuous: the stack's own ports are among the sockets checked
    ports = {port for _, _, port in sockets}
    wanted = {name: stack.state["ports"][name]
              for name in ("postgres", "s3", "mlflow", "ray_gcs", "ray_dashboard")}
    assert {name for name, port in wanted.items() if port not in ports} == set()
