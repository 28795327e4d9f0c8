"""End to end: `mlrt submit` and plain `ray job submit` against a real two-node Ray cluster.

The module starts its own cluster with `ray start` (a head and one worker node, 2 logical CPUs
each, token authentication on with a token made for this run, free ports, its own --temp-dir)
and stops only that cluster at the end: `ray stop` has no address option and would kill every
Ray on the machine (other sessions' too), so teardown terminates the processes whose command
line names this cluster's temp dir or GCS address, and their children.

A folder under the test's tmp dir stands in for NFS: every node of this one-machine cluster sees
it, and the spec declares it with `runtime.shared_storage: true`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from ray.util.state.common import ListApiOptions, StateResource

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
MLRT = str(BIN / "mlrt")
RAY = str(BIN / "ray")
# Quick runs: 3 epochs reach ~0.9 accuracy, so the quick gate asks for 0.8.
QUICK = ["--set", "train.epochs=3", "--set", "evaluate.gate.min=0.8"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A head and worker nodes started with `ray start`, stopped by pid (see module doc)."""

    def __init__(self, worker_cpus: list[int], head_cpus: int = 2):
        self.node_dirs: list[str] = []
        self.temp_dir = tempfile.mkdtemp(prefix="mlrt-ray-", dir="/tmp")  # short: socket paths
        self.token = secrets.token_hex(16)
        self.gcs_port, self.dashboard_port = _free_port(), _free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        # The job's `python`/`mlrt` must be this venv's: the raylet hands its PATH to jobs.
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                    "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            self.env.pop(key, None)
        self._start(["--head", "--port", str(self.gcs_port), "--dashboard-host", "127.0.0.1",
                     "--dashboard-port", str(self.dashboard_port),
                     "--ray-client-server-port", str(_free_port()),
                     "--num-cpus", str(head_cpus), "--temp-dir", self.temp_dir])
        self.gcs_address = f"{self._node_ip()}:{self.gcs_port}"
        # Each node keeps its own temp dir, as separate machines would: nodes sharing one
        # session dir replace each other's unpacked working dir under a running job.
        self.node_dirs = [tempfile.mkdtemp(prefix="mlrt-rayw-", dir="/tmp") for _ in worker_cpus]
        for cpus, node_dir in zip(worker_cpus, self.node_dirs, strict=True):
            self._start(["--address", self.gcs_address, "--num-cpus", str(cpus),
                         "--temp-dir", node_dir])

    def _start(self, args: list[str]) -> None:
        subprocess.run([RAY, "start", *args, "--disable-usage-stats",
                        "--dashboard-agent-listen-port", str(_free_port())],
                       env=self.env, check=True, capture_output=True, timeout=120)

    def _node_ip(self) -> str:
        from ray._private.services import get_node_ip_address

        return get_node_ip_address()

    def stop(self) -> None:
        """Terminate this cluster's processes (and their children) only."""
        marks = [self.temp_dir, *self.node_dirs, f"--address={self.gcs_address}"]
        roots = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if any(mark in cmdline for mark in marks):
                roots.append(proc)
        procs = {p.pid: p for r in roots for p in [r, *self._children(r)]}
        for proc in procs.values():
            with_suppressed(proc.terminate)
        _, alive = psutil.wait_procs(list(procs.values()), timeout=5)
        for proc in alive:
            with_suppressed(proc.kill)
        for folder in (self.temp_dir, *self.node_dirs):
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _children(proc: psutil.Process) -> list[psutil.Process]:
        try:
            return proc.children(recursive=True)
        except psutil.Error:
            return []

    def state_client(self):
        from ray.util.state import StateApiClient

        return StateApiClient(address=self.address,
                              headers={"Authorization": f"Bearer {self.token}"})


def with_suppressed(fn) -> None:
    with contextlib.suppress(psutil.Error):  # already gone
        fn()


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster(worker_cpus=[2])
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A user's project: the shipped jobs and a folder that stands in for NFS."""
    work = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "jobs", work / "jobs")
    (work / "shared").mkdir()
    return work


def shared_set(project: Path) -> list[str]:
    return ["--set", f"storage={project / 'shared'}", "--set", "runtime.shared_storage=true"]


def mlrt_submit(cluster: LocalCluster, project: Path, *args: str, env: dict | None = None,
                timeout: float = 420) -> subprocess.CompletedProcess:
    # Only the token: no RAY_AUTH_MODE, so this checks that mlrt sends it itself.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    return subprocess.run([MLRT, "submit", *args, "--address", cluster.address],
                          cwd=project, env={**base, "RAY_AUTH_TOKEN": cluster.token, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, check=False)


def registered_versions(storage: Path, name: str = "digits-mlp") -> list:
    from runtime.errors import RegistryError
    from runtime.registry import tracking, versions

    tracking.use_store(str(storage))
    try:
        return versions.list_versions(name)
    except RegistryError:  # no such model yet
        return []


# --- preflight: each problem exits 2 before anything is submitted ----------------------------


def test_local_storage_on_a_multi_node_cluster_is_refused(cluster, project):
    result = mlrt_submit(cluster, project, "jobs/digits.yaml")
    assert result.returncode == 2, result.stderr
    assert "storage: '.mlrt' is a local path but the cluster has 2 nodes" in result.stderr
    assert "local sqlite file on a 2-node cluster" in result.stderr
    assert "submitted" not in result.stderr


def test_resources_that_do_not_fit_are_refused(cluster, project):
    result = mlrt_submit(cluster, project, "jobs/digits.yaml", *shared_set(project),
                         "--set", "train.workers=5", "--set", "train.use_gpu=true")
    assert result.returncode == 2, result.stderr
    assert ("train.workers: 5 workers x 1 CPUs = 5 CPUs; the cluster has 4 CPUs on 2 node(s)"
            in result.stderr)
    assert "train.use_gpu: 5 workers need 5 GPUs; the cluster has 0" in result.stderr
    big = mlrt_submit(cluster, project, "jobs/digits.yaml", *shared_set(project),
                      "--set", "train.cpus_per_worker=3")
    assert big.returncode == 2 and "do not fit on any node" in big.stderr


def test_sqlite_tracking_uri_on_a_multi_node_cluster_is_refused(cluster, project):
    result = mlrt_submit(cluster, project, "jobs/digits.yaml", *shared_set(project), "--set",
                         f"runtime.env_vars={{MLFLOW_TRACKING_URI: sqlite:///{project}/x.db}}")
    assert result.returncode == 2, result.stderr
    assert f"MLflow tracking URI sqlite:///{project}/x.db is a local sqlite file" in result.stderr


def test_an_upload_over_rays_limit_names_the_largest_folders(cluster, project, tmp_path):
    work = tmp_path / "big"
    shutil.copytree(project / "jobs", work / "jobs")
    (work / "raw_data").mkdir()
    (work / "raw_data" / "blob.bin").write_bytes(os.urandom(3 * 1024**2))
    result = subprocess.run(
        [MLRT, "submit", "jobs/digits.yaml", "--address", cluster.address, *shared_set(project)],
        cwd=work, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "RAY_AUTH_TOKEN": cluster.token,
             "RAY_max_grpc_message_size": str(1024**2)})  # Ray's limit, lowered for the test
    assert result.returncode == 2, result.stderr
    assert "over Ray's limit of 1.0 MiB; largest: raw_data (3.0 MiB)" in result.stderr
    assert "runtime.excludes" in result.stderr


def test_a_wrong_token_is_a_clear_error(cluster, project):
    result = mlrt_submit(cluster, project, "jobs/digits.yaml", *shared_set(project),
                         env={"RAY_AUTH_TOKEN": "not-the-token"})
    assert result.returncode == 2
    assert "the cluster refused the request (a token was sent)" in result.stderr


def test_bad_addresses_and_a_spec_outside_the_working_dir_exit_2(project, tmp_path):
    def submit(*args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        return subprocess.run([MLRT, "submit", *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    nobody = submit("jobs/digits.yaml", "--address", "http://127.0.0.1:1")
    assert nobody.returncode == 2
    assert "http://127.0.0.1:1: no Ray dashboard / job server answers there" in nobody.stderr
    outside = tmp_path / "elsewhere.yaml"
    shutil.copy(project / "jobs" / "digits.yaml", outside)
    wrong_dir = submit(str(outside), "--address", "http://127.0.0.1:1")
    assert wrong_dir.returncode == 2 and "must be inside the working dir" in wrong_dir.stderr
    no_address = submit("jobs/digits.yaml")
    assert no_address.returncode == 2 and "--address: give the cluster's job server" in \
        no_address.stderr


# --- real jobs --------------------------------------------------------------------------------


def test_mlrt_submit_runs_digits_spread_over_two_nodes(cluster, project):
    result = mlrt_submit(cluster, project, "jobs/digits.yaml", *QUICK, *shared_set(project),
                         "--set", "train.placement=spread",
                         "--set", "train.single_process_below_mb=0")  # a worker group
    assert result.returncode == 0, result.stderr[-4000:]
    assert "SUCCEEDED" in result.stdout
    assert "[register] done" in result.stderr  # the job's own log, streamed
    assert "upload" in result.stderr and "environment" in result.stderr
    shared = project / "shared"
    versions = registered_versions(shared)
    assert [v.version for v in versions] == ["1"] and versions[0].gate == "passed"
    assert any((shared / "ray_train").rglob("model.safetensors"))  # checkpoints: shared storage
    assert any((shared / "mlartifacts").rglob("model.safetensors"))  # the registered model
    workers = cluster.state_client().list(
        StateResource.ACTORS, options=_actor_options("RayTrainWorker"),
        raise_on_missing_output=False)
    assert len({w.node_id for w in workers}) == 2, [(w.node_id, w.state) for w in workers]


def test_mlrt_deploy_serves_the_champion_on_the_cluster(cluster, project):
    """`mlrt deploy --address http://HEAD:8265` (the dashboard's Serve API, token only in the
    user's env): the champion the spread job registered answers over HTTP on the cluster, with
    the registered model's own predictions."""
    import httpx
    import mlflow
    from sklearn.datasets import load_digits

    from serve_apps.local import wait_healthy

    assert registered_versions(project / "shared"), "needs the spread job's registered model"
    port = _free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    deploy = [MLRT, "deploy", "jobs/digits.yaml", "--address", cluster.address,
              "--port", str(port), *shared_set(project)]
    result = subprocess.run(deploy, cwd=project, env={**base, "RAY_AUTH_TOKEN": cluster.token},
                            capture_output=True, text=True, timeout=300, check=False)
    try:
        assert result.returncode == 0, result.stderr[-4000:]
        assert "deployed models:/digits-mlp@champion as app 'digits-mlp'" in result.stderr
        url = f"http://127.0.0.1:{port}/digits"
        wait_healthy(url, 180)
        rows = load_digits(as_frame=True).frame.drop(columns="target").head(20)
        response = httpx.post(f"{url}/predict", json={"instances": rows.values.tolist()},
                              timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == {"name": "digits-mlp", "version": "1"}
        registered_versions(project / "shared")  # points MLflow at the shared store
        expected = mlflow.pyfunc.load_model("models:/digits-mlp@champion").predict(rows)
        assert response.json()["predictions"] == expected["prediction"].tolist()
    finally:  # free the cluster's CPUs for the jobs below
        subprocess.run([str(BIN / "serve"), "shutdown", "--address", cluster.address, "-y"],
                       env=cluster.env, capture_output=True, timeout=120, check=False)


def _actor_options(class_name: str):
    return ListApiOptions(filters=[("class_name", "=", class_name)], detail=True)


def test_plain_ray_job_submit_runs_mlrt(cluster, project):
    before = len(registered_versions(project / "shared"))
    env = {**cluster.env, "RAY_API_SERVER_ADDRESS": cluster.address}  # RAY_AUTH_MODE=token
    result = subprocess.run(
        [RAY, "job", "submit", "--working-dir", ".", "--", "mlrt", "run", "jobs/digits.yaml",
         *QUICK, *shared_set(project)],
        cwd=project, env=env, capture_output=True, text=True, timeout=420, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "succeeded" in result.stdout.lower()
    versions = registered_versions(project / "shared")
    assert len(versions) == before + 1 and versions[-1].gate == "passed"


def test_a_failing_gate_fails_the_job_and_exits_1_with_the_reason(cluster, project):
    # The scikit-learn job: the quickest spec that trains, evaluates and registers.
    result = mlrt_submit(cluster, project, "jobs/breast_cancer.yaml", "--set",
                         "evaluate.gate.min=0.9999", *shared_set(project))
    assert result.returncode == 1, result.stderr[-4000:]
    assert "FAILED: gate failed: accuracy" in result.stderr
    assert "alias 'champion' left where it was" in result.stderr
    (version,) = registered_versions(project / "shared", "breast-cancer-hgb")
    assert version.gate == "failed" and version.aliases == []


def test_no_wait_prints_the_job_id_and_the_commands_to_follow_it(cluster, project):
    result = mlrt_submit(cluster, project, "jobs/digits.yaml", "--no-wait",
                         *shared_set(project))
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert job_id.startswith("raysubmit_")
    commands = [line.strip() for line in result.stderr.splitlines() if "ray job " in line]
    address = cluster.address
    assert commands == [f"RAY_AUTH_MODE=token ray job status {job_id} --address {address}",
                        f"RAY_AUTH_MODE=token ray job logs {job_id} --address {address} --follow",
                        f"RAY_AUTH_MODE=token ray job stop {job_id} --address {address}"]
    # Pasted into a shell that has only the token (as the user's), they work.
    shell_env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_MODE"}
    for command in (commands[2], commands[0]):
        done = subprocess.run(command, shell=True, env=shell_env, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    assert "stopped" in (done.stdout + done.stderr).lower()


# --- mlrt submit --watch: the closed loop as a long-running job ------------------------------


def test_submit_watch_refuses_a_watcher_that_could_not_work_before_uploading(cluster, project):
    result = mlrt_submit(cluster, project, "jobs/breast_cancer.yaml", "--watch")
    assert result.returncode == 2, result.stderr
    assert "serve.capture: the watcher judges captured traffic" in result.stderr
    assert "storage: '.mlrt' is relative" in result.stderr
    assert "[submit]" not in result.stderr  # nothing was uploaded


def test_submit_watch_returns_with_the_watcher_running_until_stopped(cluster, project):
    from ray.job_submission import JobStatus, JobSubmissionClient

    result = mlrt_submit(cluster, project, "jobs/breast_cancer.yaml", "--watch",
                         "--set", "serve.capture={}", "--set", "monitor.interval=10s",
                         *shared_set(project))
    assert result.returncode == 0, result.stderr[-4000:]
    job_id = result.stdout.strip()
    assert f"ray job logs {job_id} --address {cluster.address} --follow" in result.stderr
    assert f"ray job stop {job_id}" in result.stderr
    client = JobSubmissionClient(cluster.address,
                                 headers={"Authorization": f"Bearer {cluster.token}"})
    try:
        assert client.get_job_status(job_id) == JobStatus.RUNNING
        # the watcher runs cycles on the cluster: its first one is in the job's log (with no
        # champion in the shared registry yet the cycle fails, which a long-running watcher
        # records and outlives)
        deadline = time.monotonic() + 180
        logs = ""
        while "[watch]" not in logs and time.monotonic() < deadline:
            time.sleep(1)
            logs = client.get_job_logs(job_id)
        assert "mlrt: watching breast-cancer-hgb every 10s" in logs, logs[-3000:]
        assert "[watch]" in logs, logs[-3000:]
        assert client.get_job_status(job_id) == JobStatus.RUNNING  # one cycle did not end it
    finally:
        client.stop_job(job_id)
        deadline = time.monotonic() + 60
        while client.get_job_status(job_id) not in (JobStatus.STOPPED, JobStatus.FAILED,
                                                    JobStatus.SUCCEEDED):
            assert time.monotonic() < deadline, "the watcher job did not stop"
            time.sleep(0.5)
    assert client.get_job_status(job_id) == JobStatus.STOPPED
