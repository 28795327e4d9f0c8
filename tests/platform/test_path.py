"""The path a platform team takes, end to end, against the real stack (make platform): a job
submitted to the containerised Ray with `storage` in Ceph's S3 and MLflow on PostgreSQL, a
Train worker killed mid-run, a Tune search whose driver is killed, batch predictions to S3,
`mlrt deploy` onto the cluster, HTTP predictions from its replicas, promote and rollback.

    make platform && .venv/bin/python -m pytest tests/platform/test_path.py -q

Every test drives the CLI as a user would, from this checkout (the working dir uploaded to
the cluster), with the environment of .platform/env. One model name and one storage prefix
per session (unique, so a stack kept up between sessions starts each one clean); the runs are
module-scoped and shared between the tests that read them.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from serve_apps.local import free_port

pytestmark = pytest.mark.platform
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MLRT = str(BIN / "mlrt")
# 2 workers x 1 CPU on the 2 x 2-CPU cluster; small batches and one checkpoint per epoch so
# that a worker can be killed after the first checkpoint while training still runs
TRAIN = ["--set", "train.epochs=6", "--set", "train.batch_size=16",
         "--set", "train.checkpoint_every=1", "--set", "evaluate.gate.min=0.8",
         "--set", "train.single_process_below_mb=0"]  # Ray Train's workers, on digits too
TUNE = ["--set", "tune.samples=4", "--set", "train.epochs=4", "--set", "train.batch_size=16",
        "--set", "tune.scheduler={kind: fifo}", "--set", "evaluate.gate.min=0.5"]
# Ray Train V2 writes it next to the checkpoints once its controller registers one
CHECKPOINT_SNAPSHOT = "checkpoint_manager_snapshot.json"
TRIAL_FINISHED = re.compile(r"trial (\S+) finished after")


# --- helpers ----------------------------------------------------------------------------------


def s3_client(stack):
    import boto3
    from botocore.config import Config

    env = stack.env
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                        region_name=env["AWS_DEFAULT_REGION"],
                        config=Config(request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


def keys(stack, prefix: str) -> list[str]:
    pages = s3_client(stack).get_paginator("list_objects_v2").paginate(
        Bucket=stack.bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def user_env(stack) -> dict:
    """A user's shell after `. .platform/env`: the cluster, MLflow and S3; no local MLflow."""
    env = stack.process_env()
    env.pop("MLFLOW_REGISTRY_URI", None)
    return env


def mlrt(stack, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([MLRT, *args], cwd=REPO, env=user_env(stack), capture_output=True,
                          text=True, timeout=timeout, check=False)


def cluster_processes(stack, mark: str) -> list:
    """Processes in the stack's Ray containers whose command line holds `mark` (a container's
    processes descend from its init pid; nothing else on this machine is looked at)."""
    import psutil

    found = []
    for record in stack.state["containers"]:
        try:
            family = psutil.Process(record["pid"]).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for proc in family:
            try:
                if mark in " ".join(proc.cmdline()):
                    found.append(proc)
            except psutil.Error:
                continue
    return found


def follow(proc: subprocess.Popen, log: Path, until, timeout: float, what: str) -> None:
    """Wait until `until(log text)` holds while `proc` runs; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until(log.read_text()):
            return
        if proc.poll() is not None:
            pytest.fail(f"the job ended before {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.3)
    pytest.fail(f"no {what} within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def run_id_of(text: str) -> str:
    found = re.search(r"run id\W+([0-9a-f]{32})", text)  # a row of the summary table
    assert found, text[-3000:]
    return found.group(1)


# --- the shared runs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def where(stack):
    """This session's model name and storage prefix in the stack's bucket."""
    tag = uuid.uuid4().hex[:8]
    prefix = f"path-{tag}"
    return {"name": f"pt-digits-{tag}", "prefix": prefix,
            "storage": f"s3://{stack.bucket}/{prefix}"}


def with_where(where: dict) -> list[str]:
    return ["--set", f"storage={where['storage']}", "--set", f"name={where['name']}"]


@pytest.fixture(scope="module")
def trained(stack, where, tmp_path_factory):
    """`mlrt submit jobs/digits.yaml` with storage in S3; one Train worker SIGKILLed once the
    first checkpoint is in the bucket and registered by Train's controller."""
    log = tmp_path_factory.mktemp("trained") / "submit.log"
    args = [MLRT, "submit", "jobs/digits.yaml", *with_where(where), *TRAIN]
    checkpoints = f"{where['prefix']}/ray_train/"
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=user_env(stack), stdout=out,
                                stderr=subprocess.STDOUT, text=True)
        try:
            # registered, not only uploaded: Ray Train writes its checkpoint manager's
            # snapshot after the controller registers a checkpoint; a worker killed between
            # the upload and that (CI hit it twice) restarts from epoch 1, by Ray's design
            follow(proc, log, lambda _: any(k.endswith(CHECKPOINT_SNAPSHOT)
                                            for k in keys(stack, checkpoints)),
                   420, "a registered checkpoint in S3")
            workers = cluster_processes(stack, "ray::RayTrainWorker")
            assert workers, "no Train worker process found in the Ray containers"
            workers[0].send_signal(signal.SIGKILL)
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {"returncode": proc.returncode, "log": log.read_text(),
            "killed_pid": workers[0].pid}


@pytest.fixture(scope="module")
def mlflow_client(stack):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)


# --- training on the cluster ------------------------------------------------------------------


def test_submitted_job_resumes_from_its_s3_checkpoint_after_a_worker_is_killed(
        stack, where, trained):
    log = trained["log"]
    assert trained["returncode"] == 0, log[-4000:]
    assert "SUCCEEDED" in log
    assert re.search(r"resuming from checkpoint after epoch \d+", log), log[-4000:]
    assert "1 (resumed from checkpoint)" in log, log[-3000:]  # the summary's restarts row
    stored = keys(stack, f"{where['prefix']}/ray_train/")
    assert any(k.endswith("model.safetensors") for k in stored), stored[:20]
    # the MLflow server's URL is the UI hint, not an `mlflow ui` command
    assert f"open {stack.tracking_uri}" in log


def test_run_and_version_in_postgresql_model_files_in_s3(stack, where, trained, mlflow_client):
    import psycopg2

    assert trained["returncode"] == 0, trained["log"][-3000:]
    run_id = run_id_of(trained["log"])
    url = stack.state["postgres_url"].replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(url) as db, db.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_uuid = %s", (run_id,))
        assert cursor.fetchone() == ("FINISHED",)
        cursor.execute("SELECT value FROM tags WHERE run_uuid = %s AND key = %s",
                       (run_id, "mlrt.git_commit"))
        (commit,) = cursor.fetchone()
        cursor.execute("SELECT version, run_id FROM model_versions WHERE name = %s",
                       (where["name"],))
        assert cursor.fetchall() == [(1, run_id)]
    # the submitter's commit: the job's uploaded copy has no .git of its own
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert commit.removesuffix("+dirty") == head
    # the registered model's files are objects in the bucket, under the server's artifact root
    experiment = mlflow_client.get_run(run_id).info.experiment_id
    model_keys = keys(stack, f"mlflow/{experiment}/")
    assert any(k.endswith("model.safetensors") for k in model_keys), model_keys[:20]
    assert any(k.endswith("MLmodel") for k in model_keys)
    # and the audit trail lives under `storage`, in the bucket too
    assert keys(stack, f"{where['prefix']}/audit/{where['name']}/")


def test_the_host_does_not_end_a_run_whose_driver_is_in_a_container(stack, trained,
                                                                    mlflow_client):
    """The container's driver runs with this host's name (host network) but in its own pid
    namespace: from the host its pid proves nothing, so a host-side run of the experiment
    must leave such a run RUNNING (here: one tagged exactly like the cluster's driver)."""
    from runtime.registry import tracking

    run = mlflow_client.get_run(run_id_of(trained["log"]))
    tag = run.data.tags[tracking.DRIVER_TAG]
    host, pidns, pid = tag.split(":")
    assert pid.isdigit() and f"{host}:{pidns}" != tracking.driver_id(1).rsplit(":", 1)[0]
    experiment = run.info.experiment_id
    alive_elsewhere = mlflow_client.create_run(experiment, tags={tracking.DRIVER_TAG: tag})
    try:
        os.environ["MLFLOW_TRACKING_URI"] = stack.tracking_uri  # the autouse fixture resets it
        tracking.use_store(".mlrt")
        ended = tracking.end_stale_runs(experiment)
        assert alive_elsewhere.info.run_id not in ended
        assert mlflow_client.get_run(alive_elsewhere.info.run_id).info.status == "RUNNING"
    finally:
        mlflow_client.set_terminated(alive_elsewhere.info.run_id, "KILLED")


# --- serving from the cluster -----------------------------------------------------------------


def digits_rows(n: int):
    from sklearn.datasets import load_digits

    frame = load_digits(as_frame=True).frame
    return frame.drop(columns="target").head(n), frame["target"].head(n)


def test_deploy_serves_predictions_from_replicas_that_loaded_the_model_from_s3(
        stack, where, trained, mlflow_client, tmp_path):
    import httpx
    import mlflow

    from serve_apps.local import wait_healthy

    assert trained["returncode"] == 0, trained["log"][-3000:]
    port = free_port()
    deploy = mlrt(stack, "deploy", "jobs/digits.yaml", "--address", stack.env["RAY_ADDRESS"],
                  "--port", str(port), "--host", "127.0.0.1", *with_where(where),
                  "--set", "serve.capture={flush_s: 1}", timeout=420)
    try:
        assert deploy.returncode == 0, deploy.stderr[-4000:]
        url = f"http://127.0.0.1:{port}/digits"
        wait_healthy(url, 240)
        rows, _ = digits_rows(30)
        response = httpx.post(f"{url}/predict", json={"instances": rows.values.tolist()},
                              timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == {"name": where["name"], "version": "1"}
        # the same predictions as the registered model loaded here, through the server
        mlflow.set_tracking_uri(stack.tracking_uri)
        expected = mlflow.pyfunc.load_model(f"models:/{where['name']}@champion").predict(rows)
        assert body["predictions"] == expected["prediction"].tolist()
        # the replicas read the version through the tracking server's artifact proxy, whose
        # store is the bucket: the version's model is nowhere but in S3
        location = mlflow_client.get_model_version_download_uri(where["name"], "1")
        assert location.startswith("mlflow-artifacts:/"), location
        experiment, _, rest = location.removeprefix("mlflow-artifacts:/").partition("/")
        stored = keys(stack, f"mlflow/{experiment}/{rest}/")
        assert any(k.endswith("model.safetensors") for k in stored), stored[:20]
        bad = httpx.post(f"{url}/predict", json={"instances": [[1.0, 2.0]]}, timeout=60)
        assert bad.status_code == 422 and "64" in bad.text
        # the replicas' captured rows land in the bucket, under storage's captures/ prefix
        captured = _captured_rows(stack, f"{where['prefix']}/captures/{where['name']}/", 30)
        assert body["request_id"] in captured, sorted(captured)[:5]
    finally:
        subprocess.run([str(BIN / "serve"), "shutdown", "--address", stack.env["RAY_ADDRESS"],
                        "-y"], env=user_env(stack), capture_output=True, timeout=120,
                       check=False)


def _captured_rows(stack, prefix: str, want: int, timeout_s: float = 60) -> set[str]:
    """The request ids of the capture files under prefix, once at least `want` rows are there
    (replicas flush every flush_s; a request of N rows is N captured rows)."""
    import pyarrow.parquet as pq

    s3, ids, rows = s3_client(stack), set(), 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ids, rows = set(), 0
        for key in keys(stack, prefix):
            if key.endswith(".parquet"):
                data = s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read()
                column = pq.read_table(io.BytesIO(data)).column("request_id").to_pylist()
                ids.update(column)
                rows += len(column)
        if rows >= want:
            return ids
        time.sleep(2)
    raise AssertionError(f"{rows} captured rows under s3://{stack.bucket}/{prefix} after "
                         f"{timeout_s:.0f} s, expected {want}")


def test_batch_predictions_read_from_and_written_to_s3(stack, where, trained):
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert trained["returncode"] == 0, trained["log"][-3000:]
    rows, labels = digits_rows(200)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), buffer)
    s3 = s3_client(stack)
    s3.put_object(Bucket=stack.bucket, Key=f"{where['prefix']}/batch/input.parquet",
                  Body=buffer.getvalue())
    output = f"{where['storage']}/batch/predictions"
    # as a Ray job on the cluster: `mlrt predict` there joins the cluster (RAY_ADDRESS)
    command = ["python", "-m", "runtime", "predict", f"models:/{where['name']}/1",
               "--input", f"{where['storage']}/batch/input.parquet",
               "--output", output, "--storage", where["storage"]]
    done = subprocess.run([str(BIN / "ray"), "job", "submit", "--address",
                           stack.env["RAY_ADDRESS"], "--working-dir", str(REPO), "--",
                           *command], cwd=REPO, env=user_env(stack), capture_output=True,
                          text=True, timeout=420, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    written = keys(stack, f"{where['prefix']}/batch/predictions/")
    parts = [k for k in written if k.endswith(".parquet")]
    assert parts and any(k.endswith("/_SUCCESS") for k in written), written
    assert not [k for k in keys(stack, f"{where['prefix']}/batch/") if "mlrt-tmp" in k]
    tables = [pq.read_table(io.BytesIO(s3.get_object(Bucket=stack.bucket, Key=k)["Body"]
                                       .read())) for k in parts]
    predicted = pa.concat_tables(tables).to_pandas()
    assert len(predicted) == 200
    # rows may come back in another order: match each by its pixels
    truth = {tuple(r): y for r, y in zip(rows.values.tolist(), labels, strict=True)}
    pixels = predicted[list(rows.columns)].values.tolist()
    accuracy = sum(truth[tuple(p)] == y for p, y in zip(pixels, predicted["prediction"],
                                                         strict=True)) / len(predicted)
    assert accuracy >= 0.8


# --- a search on the cluster ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tuned(stack, where, trained, tmp_path_factory):
    """`mlrt submit jobs/digits_tune.yaml` (same model name: it becomes version 2); its driver
    in the head container SIGKILLed after a trial finished; then the command mlrt printed."""
    log = tmp_path_factory.mktemp("tuned") / "first.log"
    args = [MLRT, "submit", "jobs/digits_tune.yaml", *with_where(where), *TUNE]
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=user_env(stack), stdout=out,
                                stderr=subprocess.STDOUT, text=True)
        try:
            # killed once the search's snapshot in the bucket (what a resume reads) holds a
            # finished trial: Tune uploads it in the background, seconds after the trial ends
            follow(proc, log, lambda _: stored_finished(stack, where["prefix"]), 600,
                   "finished trial in the stored search")
            drivers = cluster_processes(stack, "runtime run jobs/digits_tune.yaml")
            assert drivers, "no job driver found in the Ray containers"
            for driver in drivers:
                driver.send_signal(signal.SIGKILL)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    first = log.read_text()
    stored = stored_finished(stack, where["prefix"])  # what the resumed search starts from
    hint = re.search(r"continue its search with: (mlrt submit .+ --resume [0-9a-f]{32})",
                     first)
    assert hint, first[-4000:]
    again = shlex.split(hint.group(1))
    resumed = mlrt(stack, *again[1:], timeout=900)
    return {"first": first, "first_returncode": proc.returncode, "hint": again,
            "resumed": resumed, "stored_finished": stored}


def stored_finished(stack, prefix: str) -> set[str]:
    """Trials TERMINATED in the newest snapshot of the search in the bucket."""
    states = sorted(k for k in keys(stack, f"{prefix}/ray_tune/")
                    if re.search(r"/experiment_state-[^/]+\.json$", k))
    if not states:
        return set()
    body = s3_client(stack).get_object(Bucket=stack.bucket, Key=states[-1])["Body"].read()
    trials = [json.loads(state) for state, _ in json.loads(body)["trial_data"]]
    return {t["trial_id"] for t in trials if t.get("status") == "TERMINATED"}


def test_a_search_resumes_from_s3_after_its_driver_is_killed(stack, where, tuned):
    first, resumed = tuned["first"], tuned["resumed"]
    assert tuned["first_returncode"] == 1, first[-3000:]
    assert "FAILED" in first
    run_id = tuned["hint"][-1]
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed the stored search" in resumed.stderr
    stored, after = tuned["stored_finished"], set(TRIAL_FINISHED.findall(resumed.stderr))
    assert stored and stored <= set(TRIAL_FINISHED.findall(first)), stored
    assert not stored & after, (stored, after)  # trials finished in the stored search: kept
    assert len(stored | after) == 4  # every sample ran to the end
    assert run_id_of(resumed.stdout + resumed.stderr) == run_id  # the same MLflow run
    assert keys(stack, f"{where['prefix']}/ray_tune/")  # the search lives in the bucket


# --- the registry on the server ---------------------------------------------------------------


def test_promote_and_rollback_against_the_server(stack, where, tuned, mlflow_client):
    assert tuned["resumed"].returncode == 0, tuned["resumed"].stderr[-3000:]
    name = where["name"]
    assert mlflow_client.get_model_version_by_alias(name, "champion").version == "2"
    common = ["--storage", where["storage"]]
    back = mlrt(stack, "models", "rollback", name, "--reason", "platform test: v2 regressed",
                *common)
    assert back.returncode == 0, back.stderr[-3000:]
    assert mlflow_client.get_model_version_by_alias(name, "champion").version == "1"
    forward = mlrt(stack, "models", "promote", name, "2", "--reason", "platform test: fixed",
                   *common)
    assert forward.returncode == 0, forward.stderr[-3000:]
    assert mlflow_client.get_model_version_by_alias(name, "champion").version == "2"
    no_reason = mlrt(stack, "models", "rollback", name, *common)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    # both decisions are in the audit trail in the bucket, with their reasons
    trail = mlrt(stack, "audit", name, "--json", *common)
    assert trail.returncode == 0, trail.stderr[-3000:]
    reasons = [e.get("reason") for e in json.loads(trail.stdout)]
    assert "platform test: v2 regressed" in reasons and "platform test: fixed" in reasons


# --- refused before anything starts -----------------------------------------------------------


def test_a_storage_the_job_cannot_reach_exits_2_naming_storage(stack, where):
    """A wrong secret (Ceph checks signatures) or a missing bucket: exit 2 naming `storage`
    within seconds, before Ray starts and before anything is submitted."""
    env = {**user_env(stack), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    cases = [(env, where["storage"]), (user_env(stack), "s3://no-such-bucket-mlrt/x")]
    if stack.state["s3"]["kind"] != "ceph":
        cases = cases[1:]  # moto accepts any key
    for case_env, storage in cases:
        done = subprocess.run([MLRT, "run", "jobs/digits.yaml", "--set", f"storage={storage}"],
                              cwd=REPO, env=case_env, capture_output=True, text=True,
                              timeout=180, check=False)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "error: storage: " in done.stderr and storage in done.stderr
        assert "[ray]" not in done.stderr  # Ray never started
