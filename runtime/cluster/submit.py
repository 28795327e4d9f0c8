"""Run a job spec on a Ray cluster as a Ray job, after checking that it can run there.

    mlrt submit jobs/digits.yaml --address http://HEAD:8265 --set train.epochs=5
    mlrt submit jobs/digits.yaml --address http://HEAD:8265 --no-wait
    mlrt submit jobs/digits.yaml --address http://HEAD:8265 --watch   # the watcher, long-running

The job is `PYTHON -m runtime run SPEC --set ...` (PYTHON: the interpreter of the cluster's
Ray workers, runtime.cluster.interpreter) in a runtime_env whose `working_dir` is the
current directory (minus `.git`, `.venv`, `.mlrt`, caches and outputs; plus the spec's
`runtime.pip` / `runtime.env_vars`, the submitter's git commit and its MLFLOW_TRACKING_URI
when that is a server). `--resume RUN_ID` continues a search whose job died; a failed job
whose search can be continued prints that command. `-m` puts the working dir first on the
job's sys.path, so the cluster needs mlrt's dependencies (the cluster/Dockerfile image has
them and mlrt itself), and user code such as `jobs/my_models.py` travels with the working dir.
With `watch` the job is `PYTHON -m runtime watch SPEC --set ...` (no --once: it runs until
`ray job stop`), and submit returns once it is RUNNING.

Preflight (`runtime.cluster.preflight`; each problem exits 2 before anything is uploaded):
the upload is over Ray's size limit; the spec asks for more CPUs/GPUs than the cluster has;
`storage` or the MLflow sqlite store is a local path on a multi-node cluster; for a watcher,
also a spec with nothing to watch or a relative `storage` (preflight.watch_problems).

Token authentication: Ray's SDK only sends the token when RAY_AUTH_MODE=token is set in the
client's environment. mlrt reads the token itself, in Ray's order (RAY_AUTH_TOKEN, the file at
RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token), and sends it as `Authorization: Bearer ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runtime.cluster.auth import auth_headers, auth_token
from runtime.cluster.interpreter import worker_python
from runtime.cluster.preflight import (
    ClusterResources,
    PreflightError,
    UploadSize,
    mib_text,
    num_text,
    preflight,
    storage_warning,
    watch_problems,
)
from runtime.errors import InputError, MlrtError
from runtime.spec import JobSpec

# Never worth uploading: version control, environments, caches, and what jobs write.
DEFAULT_EXCLUDES = (
    ".git", ".venv", "venv", ".mlrt", "mlruns", "mlartifacts", "__pycache__", "*.pyc",
    ".pytest_cache", ".ruff_cache", ".mypy_cache", "*.egg-info", "build", "dist",
    ".ipynb_checkpoints",
)
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# The submitter's commit, for the run's lineage: the job's copy of the working dir has no .git
GIT_COMMIT_ENV = "MLRT_GIT_COMMIT"
POLL_S = 0.25


class JobFailed(MlrtError):
    """The submitted job ended FAILED or STOPPED (exit 1)."""


class Detached(MlrtError):
    """Ctrl-C while following: the job keeps running on the cluster."""

    exit_code = 130


@dataclass
class SubmitResult:
    job_id: str
    status: str
    reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    resume_run: str | None = None  # a failed job's search run, for `mlrt submit --resume`


# --- what gets uploaded -----------------------------------------------------------------------


def job_excludes(spec: JobSpec, root: Path) -> list[str]:
    """Ray `excludes` for the working dir: the defaults, the spec's storage when it is a folder
    inside the working dir, and the spec's `runtime.excludes`."""
    excludes = list(DEFAULT_EXCLUDES)
    if "://" not in spec.storage:
        storage = Path(spec.storage)
        storage = storage if storage.is_absolute() else (root / storage)
        with contextlib.suppress(ValueError):  # outside the working dir: nothing to exclude
            excludes.append("/" + storage.resolve().relative_to(root.resolve()).as_posix())
    return excludes + list(spec.runtime.excludes)


def measure_upload(root: Path, excludes: Sequence[str]) -> UploadSize:
    """What Ray would upload for `root` with `excludes` (and .gitignore/.rayignore, as Ray reads
    them), in raw bytes: Ray's package zip stores files uncompressed, so it is never smaller."""
    from ray._private.runtime_env import packaging

    include_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    by_entry: dict[str, int] = {}
    root = root.absolute()

    def count(path: Path) -> None:
        if path.is_file():
            top = path.relative_to(root).parts[0]
            by_entry[top] = by_entry.get(top, 0) + path.stat().st_size

    quiet = logging.getLogger("mlrt.upload")  # Ray logs each ignore file it honours at INFO
    quiet.setLevel(logging.WARNING)
    packaging._dir_travel(root, [packaging._get_excludes(root, list(excludes))], count,
                          include_gitignore=include_gitignore, logger=quiet)
    return UploadSize(total=sum(by_entry.values()), by_entry=by_entry,
                      limit=packaging.GCS_STORAGE_MAX_SIZE)


def runtime_env(spec: JobSpec, root: Path, excludes: Sequence[str]) -> dict:
    env: dict = {"working_dir": str(root), "excludes": list(excludes)}
    if spec.runtime.pip:
        env["pip"] = list(spec.runtime.pip)
    commit = git_commit(root)
    env_vars = {GIT_COMMIT_ENV: commit} if commit else {}
    # the tracking server the submitter points at is the job's too (a sqlite path would be a
    # file on the submitter's disk: not forwarded); runtime.env_vars still wins
    server = os.environ.get("MLFLOW_TRACKING_URI", "")
    if server.startswith(("http://", "https://")):
        env_vars["MLFLOW_TRACKING_URI"] = server
    env_vars.update(spec.runtime.env_vars)
    if env_vars:
        env["env_vars"] = env_vars
    return env


def git_commit(root: Path) -> str | None:
    """HEAD of the working dir's repository, `+dirty` when tracked files differ from it (the
    run's lineage then names a commit that is not exactly what ran)."""
    import subprocess

    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None

    head = git("rev-parse", "HEAD")
    if head is None or head.returncode != 0:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = status is not None and status.returncode == 0 and status.stdout.strip()
    return head.stdout.strip() + ("+dirty" if dirty else "")


def entrypoint(spec_path: str, overrides: Sequence[str], resume: str | None = None,
               python: str = "python", command: str = "run") -> str:
    """`PYTHON -m runtime COMMAND SPEC --set ... [--resume RUN_ID]`, quoted for the job's shell;
    PYTHON is the interpreter of the cluster's Ray workers when the dashboard names it
    (runtime.cluster.interpreter), not whatever `python` is first on the raylet's PATH."""
    args = [python, "-m", "runtime", command, spec_path]
    for item in overrides:
        args += ["--set", item]
    if resume:
        args += ["--resume", resume]
    return shlex.join(args)


# --- the cluster ------------------------------------------------------------------------------


def cluster_resources(address: str, headers: dict[str, str]) -> ClusterResources:
    """Alive nodes' CPUs and GPUs from the dashboard's state API (the same address as jobs)."""
    from ray.util.state import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    client = StateApiClient(address=address, headers={"Content-Type": "application/json",
                                                      **headers})
    nodes = client.list(StateResource.NODES, options=ListApiOptions(detail=True, limit=10_000),
                        raise_on_missing_output=False)
    alive = [n for n in nodes if n.state == "ALIVE"]
    return ClusterResources(
        node_cpus=tuple(float(n.resources_total.get("CPU", 0)) for n in alive),
        node_gpus=tuple(float(n.resources_total.get("GPU", 0)) for n in alive),
    )


# --- submit and follow ------------------------------------------------------------------------


def submit(spec: JobSpec, spec_path: Path, overrides: Sequence[str], address: str, *,
           wait: bool = True, working_dir: Path | None = None, check_resources: bool = True,
           resume: str | None = None, watch: bool = False,
           echo: Callable[[str], None] = print) -> SubmitResult:
    """Preflight, submit, and (with `wait`) stream the job's logs until it ends; with `watch`,
    submit the spec's watcher and return once it runs (or failed to start)."""
    from ray.job_submission import JobSubmissionClient

    _quiet_ray_client_logs()
    root = (working_dir or Path.cwd()).absolute()
    rel_spec = _spec_in_working_dir(spec_path, root)
    headers = auth_headers()
    excludes = job_excludes(spec, root)
    upload = measure_upload(root, excludes)
    client = _connect(JobSubmissionClient, address, headers)
    cluster = cluster_resources(client.get_address(), headers) if check_resources else None
    problems = preflight(spec, cluster, upload)
    if watch:
        problems += watch_problems(spec, pods=False)
    if problems:
        raise PreflightError(problems)
    warning = storage_warning(spec)
    if warning:
        echo(f"warning: {warning}")
    where = f"{cluster.nodes} node(s), {num_text(sum(cluster.node_cpus))} CPUs" if cluster else "?"
    echo(f"[submit] {root} ({mib_text(upload.total)}) -> {client.get_address()} ({where})")
    python = worker_python(client.get_address(), headers) or "python"
    start = time.perf_counter()
    command = "watch" if watch else "run"
    job_id = client.submit_job(
        entrypoint=entrypoint(rel_spec, overrides, resume, python, command),
        runtime_env=runtime_env(spec, root, excludes),
        metadata={"mlrt.spec": rel_spec, "mlrt.name": spec.name, "mlrt.command": command})
    timings = {"upload": time.perf_counter() - start}
    echo(f"[submit] job {job_id} submitted in {timings['upload']:.1f}s (package + upload)")
    if not wait and not watch:
        return SubmitResult(job_id=job_id, status="PENDING", timings=timings)
    try:
        return _started(client, job_id, timings) if watch else _follow(client, job_id,
                                                                       timings, echo)
    except KeyboardInterrupt:
        raise Detached(f"stopped following job {job_id}; it keeps running on the cluster:\n  "
                       + "\n  ".join(follow_commands(job_id, address))) from None


def follow_commands(job_id: str, address: str) -> list[str]:
    """Ray CLI commands for the job, ready to paste: Ray's CLI sends the token only with
    RAY_AUTH_MODE=token, so they carry it when a token is in use and the shell lacks it."""
    prefix = ("RAY_AUTH_MODE=token " if auth_token() and os.environ.get("RAY_AUTH_MODE") != "token"
              else "")
    return [f"{prefix}ray job {verb} {job_id} --address {address}{extra}"
            for verb, extra in (("status", ""), ("logs", " --follow"), ("stop", ""))]


def _quiet_ray_client_logs() -> None:
    """Ray's SDK logs every ignore file and upload step at INFO; mlrt prints its own summary."""
    for name in ("ray._private.runtime_env", "ray.dashboard.modules.dashboard_sdk",
                 "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _spec_in_working_dir(spec_path: Path, root: Path) -> str:
    try:
        return spec_path.absolute().relative_to(root).as_posix()
    except ValueError:
        raise InputError(f"{spec_path}: the spec must be inside the working dir {root} (it is "
                         "uploaded with it); run from the project root or pass "
                         "--working-dir") from None


def _connect(client_cls, address: str, headers: dict[str, str]):
    from ray.exceptions import AuthenticationError

    try:
        return client_cls(address, headers=headers or None)
    except AuthenticationError as e:
        sent = "a token was sent" if headers else "no token found"
        raise InputError(f"{address}: the cluster refused the request ({sent}); set "
                         "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the cluster's token. Ray "
                         f"said: {str(e).splitlines()[0]}") from e
    except ConnectionError as e:
        raise InputError(f"{address}: no Ray dashboard / job server answers there "
                         f"({str(e).splitlines()[0]})") from e
    except (RuntimeError, OSError) as e:  # something else answers (Serve, MLflow, a proxy)
        raise InputError(f"{address}: not a Ray job server (Ray said: "
                         f"{str(e).splitlines()[0]}); give the dashboard address, "
                         "http://HEAD:8265") from e


def _follow(client, job_id: str, timings: dict[str, float],
            echo: Callable[[str], None]) -> SubmitResult:
    """Wait out PENDING (the runtime env being set up), then stream logs until the end."""
    start = time.perf_counter()
    status = _wait_while(client, job_id, ("PENDING",))
    timings["environment"] = time.perf_counter() - start
    start = time.perf_counter()
    tail: list[str] = []
    if status not in TERMINAL:
        asyncio.run(_stream_logs(client, job_id, echo, tail))
        status = _wait_while(client, job_id, ("PENDING", "RUNNING"))
    timings["run"] = time.perf_counter() - start
    info = client.get_job_info(job_id)
    if not tail:  # it failed before it ran (e.g. runtime env), or logs were not streamed
        tail = client.get_job_logs(job_id).splitlines()
    echo(f"[submit] job {job_id} {status}: upload {timings['upload']:.1f}s, environment "
         f"{timings['environment']:.1f}s, run {timings['run']:.1f}s")
    reason = "" if status == "SUCCEEDED" else _failure_reason(info, tail)
    return SubmitResult(job_id=job_id, status=str(status), reason=reason, timings=timings,
                        resume_run=None if status == "SUCCEEDED" else _resumable_run(tail))


def _started(client, job_id: str, timings: dict[str, float]) -> SubmitResult:
    """Wait out PENDING only: a watcher never ends by itself, but a runtime env that cannot be
    set up (pip, upload) or a watcher that exits at once should fail the submit, not a log."""
    start = time.perf_counter()
    status = _wait_while(client, job_id, ("PENDING",))
    timings["environment"] = time.perf_counter() - start
    reason = ""
    if status in TERMINAL:
        reason = _failure_reason(client.get_job_info(job_id),
                                 client.get_job_logs(job_id).splitlines())
    return SubmitResult(job_id=job_id, status=status, reason=reason, timings=timings)


def _wait_while(client, job_id: str, states: tuple[str, ...]) -> str:
    while True:
        status = str(client.get_job_status(job_id))
        if status not in states:
            return status
        time.sleep(POLL_S)


async def _stream_logs(client, job_id: str, echo: Callable[[str], None],
                       tail: list[str]) -> None:
    async for chunk in client.tail_job_logs(job_id):
        for line in chunk.splitlines():
            echo(line)
            tail.append(line)
            del tail[:-200]


_ERROR_LINE = re.compile(r"^\s*error:\s*(.+)$")
# the driver's line when a search starts: "... continue it with: mlrt run SPEC --resume ID"
_RESUME_LINE = re.compile(r"--resume ([0-9a-f]{32})\b")


def _resumable_run(log_lines: list[str]) -> str | None:
    """The MLflow run a dead job's search can be continued from (the driver printed it)."""
    for line in reversed(log_lines):
        found = _RESUME_LINE.search(line)
        if found:
            return found.group(1)
    return None


def _failure_reason(info, log_lines: list[str]) -> str:
    """The job's own `error: ...` line (what `mlrt run` printed), else Ray's message."""
    for line in reversed(log_lines):
        found = _ERROR_LINE.match(line)
        if found:
            return found.group(1).strip()
    message = (info.message or "").strip()
    return message.splitlines()[-1] if message else f"exit code {info.driver_exit_code}"
