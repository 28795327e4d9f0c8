"""KubeRay manifests (apiVersion ray.io/v1) for a job spec: a RayJob that trains it and a
RayService that serves it, on a Ray cluster shaped by the spec's optional `cluster:` section.

    import yaml
    from runtime.kuberay import render_rayjob
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

API_VERSION = "ray.io/v1"
RAY_VERSION = "2.60.0"
APP_DIR = "/app"  # where cluster/Dockerfile puts the project
HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001}
SERVE_PORT = 8000
JOB_TTL_S = 3600  # keep the finished job's cluster for an hour to read its logs


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
