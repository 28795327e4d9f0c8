"""KubeRay manifests rendered from a spec match the CRDs' structure and carry the spec's shape."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from runtime.cluster.kuberay import k8s_name, render_rayjob, render_rayservice
from runtime.errors import InputError
from runtime.spec import load_spec

ROOT = Path(__file__).parents[3]
SCHEMA = json.loads((ROOT / "tests" / "data" / "kuberay_crd_schema.json").read_text())
# A hand-written Serve config in the shape `serve build` writes (the serving side owns the real
# one): rendering must carry it through unchanged.
SERVE_CONFIG = {
    "proxy_location": "EveryNode",
    "applications": [{
        "name": "digits-mlp", "route_prefix": "/digits",
        "import_path": "serve_apps.predictor:app",
        "args": {"model_uri": "models:/digits-mlp@champion"},
        "deployments": [{"name": "Predictor", "num_replicas": "auto",
                         "ray_actor_options": {"num_cpus": 0.5}}],
    }],
}


def validate(manifest: dict, kind: str) -> None:
    jsonschema.validate(manifest, {**SCHEMA, "$ref": f"#/$defs/{kind}"})


def spec(*overrides: str):
    return load_spec(ROOT / "jobs" / "digits.yaml", overrides)


GPU_CLUSTER = [
    "cluster.image=registry.example.com/mlrt:0.1.0",
    "cluster.head={cpus: 2, memory: 8Gi}",
    "cluster.workers=[{name: cpu, cpus: 8, memory: 32Gi, min_replicas: 1, max_replicas: 6},"
    " {name: gpu, cpus: 8, memory: 60Gi, gpus: 1, min_replicas: 0, max_replicas: 2}]",
]


def test_rayjob_matches_the_crd_and_runs_the_spec_with_its_overrides():
    job = render_rayjob(spec(), "jobs/digits.yaml", ["train.epochs=3", "name=x y"])
    validate(job, "RayJob")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert shlex.split(job["spec"]["entrypoint"]) == [
        "mlrt", "run", "jobs/digits.yaml", "--set", "train.epochs=3", "--set", "name=x y"]
    assert job["metadata"]["name"] == "digits-mlp"
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_rayjob_cluster_has_the_specs_cpu_and_gpu_groups_and_autoscaling_bounds():
    job = render_rayjob(spec(*GPU_CLUSTER, "train.use_gpu=true"), "jobs/digits.yaml")
    validate(job, "RayJob")
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0" and cluster["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert (groups["cpu"]["minReplicas"], groups["cpu"]["maxReplicas"]) == (1, 6)
    assert (groups["gpu"]["minReplicas"], groups["gpu"]["maxReplicas"]) == (0, 2)
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"] == {"cpu": 8, "memory": "60Gi", "nvidia.com/gpu": 1}
    assert gpu["image"] == "registry.example.com/mlrt:0.1.0"
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0][
        "resources"]["limits"]


def test_the_default_cluster_is_one_cpu_group_and_fixed_groups_do_not_autoscale():
    default = render_rayjob(spec(), "jobs/digits.yaml")["spec"]["rayClusterSpec"]
    assert [g["groupName"] for g in default["workerGroupSpecs"]] == ["cpu"]
    fixed = render_rayjob(spec("cluster.workers=[{name: w, min_replicas: 2, max_replicas: 2}]"),
                          "jobs/digits.yaml")["spec"]["rayClusterSpec"]
    assert fixed["enableInTreeAutoscaling"] is False


def test_dashboard_and_job_server_are_never_open_without_a_token():
    """KubeRay binds the dashboard to 0.0.0.0 in the pod network: token auth must be on, and
    nothing mlrt renders may turn it off or re-bind the dashboard."""
    for manifest, key in ((render_rayjob(spec(), "jobs/digits.yaml"), "rayClusterSpec"),
                          (render_rayservice(spec(), SERVE_CONFIG), "rayClusterConfig")):
        cluster = manifest["spec"][key]
        assert cluster["authOptions"] == {"mode": "token"}
        for params in [cluster["headGroupSpec"]["rayStartParams"],
                       *[g["rayStartParams"] for g in cluster["workerGroupSpecs"]]]:
            assert "dashboard-host" not in params


def test_runtime_section_becomes_the_jobs_runtime_env():
    job = render_rayjob(spec("runtime.pip=[xgboost==2.1.0]",
                             "runtime.env_vars={MLFLOW_TRACKING_URI: 'http://mlflow:5000'}"),
                        "jobs/digits.yaml")
    validate(job, "RayJob")
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"]) == {
        "pip": ["xgboost==2.1.0"], "env_vars": {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}}
    assert "runtimeEnvYAML" not in render_rayjob(spec(), "jobs/digits.yaml")["spec"]


def test_rayservice_matches_the_crd_and_carries_the_serve_config():
    service = render_rayservice(spec(*GPU_CLUSTER,
                                     "runtime.env_vars={MLFLOW_TRACKING_URI: 'http://m:5000'}"),
                                SERVE_CONFIG)
    validate(service, "RayService")
    assert service["kind"] == "RayService"
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == SERVE_CONFIG
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
        "containers"][0]
    assert {"containerPort": 8000, "name": "serve"} in head["ports"]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://m:5000"} in head["env"]


def test_bad_inputs_are_clear_errors():
    with pytest.raises(InputError, match="'applications' list"):
        render_rayservice(spec(), {"deployments": []})
    with pytest.raises(InputError, match="relative to the project root"):
        render_rayjob(spec(), "/somewhere/else/jobs/digits.yaml")


def test_the_schema_catches_what_kubectl_would_reject():
    """The vendored schema is not vacuous: wrong types and unknown fields fail."""
    job = render_rayjob(spec(), "jobs/digits.yaml")
    group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group["maxReplicas"] = "4"
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'integer'"):
        validate(job, "RayJob")
    group["maxReplicas"] = 4
    group["minReplica"] = 1
    with pytest.raises(jsonschema.ValidationError, match="minReplica"):
        validate(job, "RayJob")
    del group["minReplica"], group["groupName"]
    with pytest.raises(jsonschema.ValidationError, match="groupName"):
        validate(job, "RayJob")


@pytest.mark.parametrize(("name", "expected"), [
    ("digits-mlp", "digits-mlp"), ("My_Model.v2", "my-model-v2"), ("__", "mlrt-job")])
def test_k8s_names(name, expected):
    assert k8s_name(name) == expected


def test_cluster_section_is_validated():
    from runtime.spec import SpecError

    with pytest.raises(SpecError, match="cluster.workers: train.use_gpu is true but no worker "
                                        "group has gpus"):
        spec("train.use_gpu=true", "cluster.image=x")
    with pytest.raises(SpecError, match="min_replicas \\(3\\) must be <= max_replicas"):
        spec("cluster.workers=[{name: a, min_replicas: 3, max_replicas: 1}]")
    with pytest.raises(SpecError, match="repeated: \\['a'\\]"):
        spec("cluster.workers=[{name: a}, {name: a}]")


# --- the shipped cluster-launcher configs and Dockerfile ----------------------------------------


@pytest.mark.parametrize("name", ["aws.yaml", "local.yaml"])
def test_launcher_configs_pass_rays_own_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / "cluster" / name).read_text()))
    validate_config(config)  # Ray's ray-schema.json plus its consistency checks


def test_aws_config_has_cpu_and_gpu_worker_types_with_autoscaling_bounds():
    config = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
    types = config["available_node_types"]
    assert (types["cpu"]["min_workers"], types["cpu"]["max_workers"]) == (1, 8)
    assert (types["gpu"]["min_workers"], types["gpu"]["max_workers"]) == (0, 2)
    assert "--gpus all" in types["gpu"]["docker"]["worker_run_options"]


@pytest.mark.parametrize("name", ["aws.yaml", "local.yaml"])
def test_launcher_configs_keep_token_auth_on_and_the_dashboard_private(name):
    config = yaml.safe_load((ROOT / "cluster" / name).read_text())
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for command in (c for c in starts if "ray start" in c):
        assert "RAY_AUTH_MODE=token" in command
        assert "0.0.0.0" not in command
    (head,) = [c for c in config["head_start_ray_commands"] if "--head" in c]
    assert "--dashboard-host=127.0.0.1" in head
    assert "~/.ray/auth_token" in config["file_mounts"]


def test_dockerfile_builds_on_ray_260_and_installs_cpu_torch_first():
    text = (ROOT / "cluster" / "Dockerfile").read_text()
    assert "ARG BASE=rayproject/ray:2.60.0-py311" in text
    torch_at, package_at = text.index("torch==${TORCH_VERSION}"), text.index("pip install "
                                                                              "--no-cache-dir .")
    assert torch_at < package_at and "whl/cpu" in text
    instructions = [line for line in text.splitlines() if not line.startswith("#")]
    assert "ENV RAY_AUTH_MODE=token" in instructions
    assert not any("0.0.0.0" in line for line in instructions)
