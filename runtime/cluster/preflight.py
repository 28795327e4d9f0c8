"""Preflight: every reason a spec cannot run on a given Ray cluster, before anything is uploaded.

Pure functions of the spec, the cluster's alive nodes and the working dir's upload size, so they
are unit-tested without a cluster; `runtime.cluster.submit` gathers the inputs and raises
`PreflightError` (exit 2) with one line per problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import InputError
from runtime.spec import JobSpec


class PreflightError(InputError):
    """The job cannot run on this cluster as asked; one line per problem (exit 2)."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("the job cannot run on this cluster as specified:\n"
                         + "\n".join(f"  {p}" for p in self.problems))


@dataclass(frozen=True)
class ClusterResources:
    """Alive nodes and their logical resources, as the cluster's state API reports them."""

    node_cpus: tuple[float, ...]
    node_gpus: tuple[float, ...]

    @property
    def nodes(self) -> int:
        return len(self.node_cpus)


@dataclass(frozen=True)
class UploadSize:
    total: int  # bytes Ray would upload
    by_entry: dict[str, int]  # raw bytes per top-level file or folder of the working dir
    limit: int


def job_tracking_uri(spec: JobSpec) -> str:
    """The MLflow URI the job will use: runtime.env_vars' MLFLOW_TRACKING_URI, or the sqlite
    store under `storage` (what runtime.registry does inside the job)."""
    uri = spec.runtime.env_vars.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return uri
    if "://" in spec.storage:
        return ""  # the job itself will ask for MLFLOW_TRACKING_URI
    return f"sqlite:///{spec.storage.rstrip('/')}/mlflow.db"


def preflight(spec: JobSpec, cluster: ClusterResources | None, upload: UploadSize) -> list[str]:
    """Every reason the job cannot run on this cluster; empty when it can. `cluster` None skips
    the resource and multi-node checks (autoscaling clusters that grow on demand)."""
    problems = [_upload_problem(upload)] if upload.total >= upload.limit else []
    if cluster is None:
        return problems
    problems += _resource_problems(spec, cluster)
    if cluster.nodes > 1:
        problems += _shared_storage_problems(spec, cluster.nodes)
    return problems


def _upload_problem(upload: UploadSize) -> str:
    largest = sorted(upload.by_entry.items(), key=lambda kv: -kv[1])[:3]
    return (f"working dir: the upload is {mib_text(upload.total)}, over Ray's limit of "
            f"{mib_text(upload.limit)}; largest: "
            + ", ".join(f"{name} ({mib_text(size)})" for name, size in largest)
            + ". Exclude them with runtime.excludes in the spec or a .rayignore file, and read "
              "large data from storage the cluster can reach (s3://, gs://, NFS)")


def _resource_problems(spec: JobSpec, cluster: ClusterResources) -> list[str]:
    t = spec.train
    problems = []
    total_cpus, biggest = sum(cluster.node_cpus), max(cluster.node_cpus, default=0.0)
    have = f"the cluster has {num_text(total_cpus)} CPUs on {cluster.nodes} node(s), at most " \
           f"{num_text(biggest)} on one"
    per_trial = t.workers * t.cpus_per_worker
    if t.cpus_per_worker > biggest:
        problems.append(f"train.cpus_per_worker: {num_text(t.cpus_per_worker)} CPUs per worker do "
                        f"not fit on any node; {have}")
    elif per_trial > total_cpus:
        problems.append(f"train.workers: {t.workers} workers x {num_text(t.cpus_per_worker)} CPUs "
                        f"= {num_text(per_trial)} CPUs; {have}")
    if spec.tune is not None and spec.tune.concurrent * per_trial > total_cpus >= per_trial:
        problems.append(f"tune.concurrent: {spec.tune.concurrent} trials x {num_text(per_trial)} "
                        f"CPUs = {num_text(spec.tune.concurrent * per_trial)} CPUs; {have}")
    if t.use_gpu:
        gpus = sum(cluster.node_gpus)
        if gpus < t.workers:
            problems.append(f"train.use_gpu: {t.workers} workers need {t.workers} GPUs; the "
                            f"cluster has {num_text(gpus)}")
    return problems


def _shared_storage_problems(spec: JobSpec, nodes: int) -> list[str]:
    problems = []
    local_storage = "://" not in spec.storage
    if local_storage and not spec.runtime.shared_storage:
        problems.append(
            f"storage: '{spec.storage}' is a local path but the cluster has {nodes} nodes; "
            "checkpoints and artifacts must be where every node can read them: use s3://, "
            "gs://, or an NFS path mounted on every node with runtime.shared_storage: true")
    uri = job_tracking_uri(spec)
    if uri.startswith("sqlite:"):
        # The default store lives under `storage`: fine when that is on shared storage.
        under_shared_storage = (local_storage and spec.runtime.shared_storage
                                and "MLFLOW_TRACKING_URI" not in spec.runtime.env_vars)
        if not under_shared_storage:
            problems.append(
                f"MLflow tracking URI {uri} is a local sqlite file on a {nodes}-node cluster; "
                "set runtime.env_vars.MLFLOW_TRACKING_URI to an MLflow server (or keep the "
                "store under a shared `storage` with runtime.shared_storage: true)")
    return problems


def watch_problems(spec: JobSpec, pods: bool) -> list[str]:
    """Why a watcher of this spec could not work on a cluster: `pods` for the CronJob (a new
    pod, with a new disk, every cycle), else for a long-running Ray job (`mlrt submit --watch`).
    Refused rather than warned: a watcher that forgets its lock, window counters and cooldown
    between cycles retrains again and again, and one that reads no captures never acts."""
    problems = []
    capture = spec.serve.capture is not None
    if not capture and spec.monitor.triggers.schedule is None:
        problems.append(
            "serve.capture: the watcher judges captured traffic and this spec captures none, "
            "and monitor.triggers.schedule is not set: it could never retrain. Turn on "
            "serve.capture (and serve with it) or set a schedule")
    elif not capture and spec.monitor.retrain.data == "source+captures":
        problems.append("monitor.retrain.data: source+captures needs serve.capture: without it "
                        "no labeled rows are captured to append")
    if "://" in spec.storage:
        return problems
    state = ("the watcher's state (lock, window counters, cooldown, the canary in progress) "
             "and the replicas' captures live in storage")
    if pods and not spec.runtime.shared_storage:
        problems.append(
            f"storage: '{spec.storage}' is a local path and each CronJob run is a new pod with "
            f"its own disk; {state}, so they would be lost after every cycle. Use s3:// or "
            "gs:// (or a volume every pod mounts, with runtime.shared_storage: true)")
    elif not pods and not Path(spec.storage).is_absolute():
        problems.append(
            f"storage: '{spec.storage}' is relative: on the cluster it resolves inside the "
            f"job's temporary copy of the working dir; {state}, so the watcher would see no "
            "captures and lose its state with the job. Pass --set storage=/shared/path (or "
            "s3://...)")
    return problems


def storage_warning(spec: JobSpec) -> str | None:
    """A relative local `storage` resolves inside the job's copy of the working dir, which Ray
    garbage-collects: the runs and model versions would be hard to find and eventually gone."""
    if "://" in spec.storage or Path(spec.storage).is_absolute():
        return None
    return (f"storage '{spec.storage}' is relative: on the cluster it lands inside the job's "
            "temporary copy of the working dir; pass --set storage=/shared/path (or s3://...) "
            "to keep runs and models")


def mib_text(n: float) -> str:
    return f"{n / 1024**2:.1f} MiB"


def num_text(x: float) -> str:
    return f"{x:g}"
