"""KubeRay manifests (apiVersion ray.io/v1) for a job spec: a RayJob that trains it and a
RayService that serves it, on a Ray cluster shaped by the spec's optional `cluster:` section;
and a Kubernetes CronJob (batch/v1) that runs one `mlrt watch --once` cycle against that
RayService's cluster every `monitor.interval`.

    import yaml
    from runtime.cluster.kuberay import render_rayjob
    from runtime.spec import load_spec
    print(yaml.safe_dump(render_rayjob(load_spec("jobs/digits.yaml"), "jobs/digits.yaml")))
    # kubectl apply -f - ; kubectl get rayjob digits-mlp -w

The image (`cluster.image`, default `mlrt:0.1.0` built from cluster/Dockerfile) holds Ray, mlrt
and the project at /app, so the job needs no working-dir upload. Token authentication is on
(`authOptions.mode: token`: KubeRay >= 1.5.1 makes a Secret and sets RAY_AUTH_MODE /
RAY_AUTH_TOKEN in every pod): KubeRay binds the dashboard and job server to 0.0.0.0 inside the
pod network, so they must not be open. On Kubernetes every pod has its own disk: `storage`
should be s3://, gs:// or a volume every pod mounts, and MLFLOW_TRACKING_URI an MLflow server.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import yaml

from runtime.errors import InputError
from runtime.spec import ClusterShape, JobSpec, WorkerGroup
from runtime.spec.monitor import parse_duration

API_VERSION = "ray.io/v1"
RAY_VERSION = "2.60.0"
APP_DIR = "/app"  # where cluster/Dockerfile puts the project
HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001}
SERVE_PORT = 8000
JOB_TTL_S = 3600  # keep the finished job's cluster for an hour to read its logs
# The watcher pod is a Ray Client driver: monitoring reads and training run on the cluster, but
# it imports mlrt (torch, MLflow), so it needs more than a sidecar's memory.
WATCH_CPUS, WATCH_MEMORY = 1, "2Gi"
# A CronJob's name is at most 52 characters: its Jobs get an 11-character time suffix.
CRONJOB_NAME_MAX = 52
# KubeRay keeps the cluster's token in a Secret of its own, named after the RayService's cluster
# (a generated suffix): the CronJob reads it from a Secret with a name known at render time,
# made once from that token (README: the closed loop on a cluster).
TOKEN_SECRET_KEY = "token"


def render_rayjob(spec: JobSpec, spec_path: str | Path, overrides: Sequence[str] = ()) -> dict:
    """A RayJob running `mlrt run SPEC_PATH [--set ...]` on a cluster shaped like the spec's
    `cluster:` section (defaults: one CPU worker group of 1-4 pods). `spec_path` is relative to
    the project root, which the image holds at /app."""
    job_spec: dict = {
        "entrypoint": shlex.join(["mlrt", "run", _relative(spec_path),
                                  *[a for item in overrides for a in ("--set", item)]]),
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": JOB_TTL_S,
        "submissionMode": "K8sJobMode",
        "rayClusterSpec": _cluster_spec(spec, serve=False),
    }
    env = _runtime_env(spec)
    if env:
        job_spec["runtimeEnvYAML"] = yaml.safe_dump(env, sort_keys=False)
    return {"apiVersion": API_VERSION, "kind": "RayJob", "metadata": _metadata(spec),
            "spec": job_spec}


def render_rayservice(spec: JobSpec, serve_config: dict) -> dict:
    """A RayService running `serve_config` (a Ray Serve config: `applications: [...]`, as
    `serve build` writes it) on a cluster shaped like the spec's `cluster:` section."""
    if not isinstance(serve_config, dict) or not isinstance(
            serve_config.get("applications"), list):
        raise InputError("serve config: expected a mapping with an 'applications' list")
    return {
        "apiVersion": API_VERSION, "kind": "RayService", "metadata": _metadata(spec),
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
            "rayClusterConfig": _cluster_spec(spec, serve=True),
        },
    }


def render_watch_cronjob(spec: JobSpec, spec_path: str | Path,
                         overrides: Sequence[str] = ()) -> dict:
    """A CronJob running `mlrt watch SPEC_PATH --once` every `monitor.interval` against the
    RayService `render_rayservice` makes for this spec (its head service, Ray Client port),
    one cycle at a time (concurrencyPolicy Forbid: a retrain longer than the interval makes
    the next runs wait, not pile up)."""
    name = k8s_name(spec.name)
    command = ["mlrt", "watch", _relative(spec_path),
               *[a for item in overrides for a in ("--set", item)], "--once",
               "--address", f"ray://{name}-head-svc:{HEAD_PORTS['client']}"]
    shape = spec.cluster or ClusterShape()
    container = _container("watch", shape.image, WATCH_CPUS, WATCH_MEMORY, 0,
                           {**spec.runtime.env_vars, "RAY_AUTH_MODE": "token"}, {})
    container["command"] = command
    container["env"].append({"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": token_secret(spec), "key": TOKEN_SECRET_KEY}}})
    metadata = _metadata(spec)
    metadata["name"] = name[:CRONJOB_NAME_MAX - len("-watch")].rstrip("-") + "-watch"
    labels = metadata["labels"]  # copied per use: one shared dict dumps as a YAML anchor
    return {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": metadata,
        "spec": {
            "schedule": interval_cron(spec.monitor.interval),
            "timeZone": "Etc/UTC",  # monitor.triggers.schedule is UTC too
            "concurrencyPolicy": "Forbid",
            # a run that cannot start within one interval is dropped: the next one is due
            "startingDeadlineSeconds": int(spec.monitor.interval_s),
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
            "jobTemplate": {"metadata": {"labels": dict(labels)}, "spec": {
                # no retry inside a window: the next scheduled cycle is the retry, and the
                # watcher's state in storage makes it resume what this one left
                "backoffLimit": 0,
                "ttlSecondsAfterFinished": JOB_TTL_S,
                "template": {"metadata": {"labels": dict(labels)},
                             "spec": {"restartPolicy": "Never", "containers": [container]}},
            }},
        },
    }


def token_secret(spec: JobSpec) -> str:
    """The Secret (key `token`) the watcher's CronJob reads the cluster's Ray token from."""
    return f"{k8s_name(spec.name)[:CRONJOB_NAME_MAX]}-ray-token"


# Intervals a 5-field cron repeats exactly (every run one interval after the last, across hour
# and day boundaries): divisors of an hour, divisors of a day, a week.
_EXACT_MINUTES = ([m for m in range(1, 61) if 60 % m == 0]
                  + [60 * h for h in range(2, 25) if 24 % h == 0] + [7 * 1440])


def interval_cron(interval: str) -> str:
    """`monitor.interval` as a cron schedule; InputError (exit 2) when no cron repeats it
    exactly. Refused, not rounded: each cycle judges the last `interval` of traffic, so a
    schedule that runs at other gaps would skip or double-count requests."""
    seconds = int(parse_duration(interval).total_seconds())
    minutes = seconds // 60
    if seconds % 60 == 0 and minutes in _EXACT_MINUTES:
        if minutes < 60:
            return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
        if minutes < 1440:
            hours = minutes // 60
            return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
        return "0 0 * * *" if minutes == 1440 else "0 0 * * 0"
    below = [m for m in _EXACT_MINUTES if m * 60 < seconds][-1:]
    above = [m for m in _EXACT_MINUTES if m * 60 > seconds][:1]
    nearest = " or ".join(_minutes_text(m) for m in below + above)
    raise InputError(f"monitor.interval: {interval} cannot be a cron schedule that repeats "
                     "exactly (cron runs at minutes of the hour and hours of the day); the "
                     f"CronJob needs one that divides an hour or a day, or 7d: e.g. {nearest}")


def _minutes_text(minutes: int) -> str:
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


def k8s_name(name: str) -> str:
    """A spec name as a Kubernetes object name (DNS-1123: lowercase, digits, '-')."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:50].rstrip("-")
    return cleaned or "mlrt-job"


def _relative(spec_path: str | Path) -> str:
    path = Path(spec_path)
    if path.is_absolute():
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            raise InputError(f"{spec_path}: give the spec's path relative to the project root "
                             f"(the image holds the project at {APP_DIR})") from None
    return path.as_posix()


def _metadata(spec: JobSpec) -> dict:
    return {"name": k8s_name(spec.name),
            "labels": {"app.kubernetes.io/managed-by": "mlrt",
                       "mlrt/spec-hash": spec.spec_hash()}}


def _runtime_env(spec: JobSpec) -> dict:
    env: dict = {}
    if spec.runtime.pip:
        env["pip"] = list(spec.runtime.pip)
    if spec.runtime.env_vars:
        env["env_vars"] = dict(spec.runtime.env_vars)
    return env


def _cluster_spec(spec: JobSpec, serve: bool) -> dict:
    shape = spec.cluster or ClusterShape()
    # A RayService's env vars live on the pods (its serve config belongs to the serving side).
    env = dict(spec.runtime.env_vars) if serve else {}
    ports = {**HEAD_PORTS, **({"serve": SERVE_PORT} if serve else {})}
    head = _container("ray-head", shape.image, shape.head.cpus, shape.head.memory, 0, env, ports)
    return {
        "rayVersion": RAY_VERSION,
        "authOptions": {"mode": "token"},
        "enableInTreeAutoscaling": any(g.min_replicas < g.max_replicas for g in shape.workers),
        "headGroupSpec": {"rayStartParams": {}, "template": _pod(head)},
        "workerGroupSpecs": [_worker_group(g, shape.image, env) for g in shape.workers],
    }


def _worker_group(group: WorkerGroup, image: str, env: dict) -> dict:
    container = _container("ray-worker", image, group.cpus, group.memory, group.gpus, env, {})
    return {
        "groupName": group.name,
        "replicas": group.min_replicas,
        "minReplicas": group.min_replicas,
        "maxReplicas": group.max_replicas,
        "rayStartParams": {},  # Ray reads CPUs, memory and GPUs from the container's limits
        "template": _pod(container),
    }


def _pod(container: dict) -> dict:
    return {"spec": {"containers": [container]}}


def _container(name: str, image: str, cpus: float, memory: str, gpus: int, env: dict,
               ports: dict[str, int]) -> dict:
    resources: dict = {"cpu": _quantity(cpus), "memory": memory}
    if gpus:
        resources["nvidia.com/gpu"] = gpus
    container: dict = {
        "name": name, "image": image, "workingDir": APP_DIR,
        # Requests equal to limits: Ray sizes itself from the limits, so the pod should get them.
        "resources": {"requests": dict(resources), "limits": dict(resources)},
    }
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if ports:
        container["ports"] = [{"containerPort": p, "name": n} for n, p in ports.items()]
    return container


def _quantity(cpus: float) -> int | str:
    return int(cpus) if float(cpus).is_integer() else f"{round(cpus * 1000)}m"
