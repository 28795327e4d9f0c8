"""End to end: `mlrt render --target serve`, and `mlrt serve` in the foreground as a user runs
it (its own local Ray), answering over HTTP and stopping cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from user import LOGREG, MLRT, ROOT, mlrt, user_dir, wait_for_urls  # tests/e2e/user.py

from serve_apps.local import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return user_dir(tmp_path_factory, "serve-user")


@pytest.fixture(scope="module")
def trained(workdir) -> Path:
    """jobs/breast_cancer.yaml's model (as LogisticRegression: fast) registered @champion."""
    result = mlrt("run", "jobs/breast_cancer.yaml", *LOGREG, cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def _spec_copy(workdir: Path, path: str, **top: object) -> str:
    """jobs/breast_cancer.yaml with top-level fields replaced (name, serve), as a user copies
    a spec."""
    spec = yaml.safe_load((workdir / "jobs/breast_cancer.yaml").read_text())
    spec.update(top)
    (workdir / path).write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_render_writes_a_config_serve_accepts(workdir):
    from ray.serve.schema import ServeDeploySchema

    result = mlrt("render", "jobs/digits.yaml", "--target", "serve", "-o", "serve.yaml",
                  cwd=workdir)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((workdir / "serve.yaml").read_text())
    ServeDeploySchema.model_validate(config)  # what `serve deploy` / `serve run` validate
    app = config["applications"][0]
    assert app["import_path"] == "serve_apps.predictor:build_app"
    assert app["route_prefix"] == "/digits" and app["args"]["model_uri"] == \
        "models:/digits-mlp@champion"
    scaling = app["deployments"][0]["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (1, 4)
    assert app["deployments"][0]["ray_actor_options"]["num_cpus"] == 0.5
    assert config["controller_options"]["runtime_env"]["env_vars"][
        "RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    bad = mlrt("render", "jobs/digits.yaml", "--target", "helm", cwd=workdir)
    assert bad.returncode == 2 and "unknown target 'helm'" in bad.stderr


@pytest.mark.parametrize("target", ["rayjob", "rayservice"])
def test_render_kuberay_manifests_fit_the_crd(workdir, target):
    import jsonschema

    schema = json.loads((ROOT / "tests/data/kuberay_crd_schema.json").read_text())
    kind = {"rayjob": "RayJob", "rayservice": "RayService"}[target]
    result = mlrt("render", "jobs/digits.yaml", "--target", target, "--set", "train.epochs=3",
                  "-o", f"{target}.yaml", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert f"kubectl apply -f {target}.yaml" in result.stderr
    assert "storage '.mlrt' is a local path" in result.stderr  # lost with the pods: say so
    manifest = yaml.safe_load((workdir / f"{target}.yaml").read_text())
    jsonschema.validate(manifest, {**schema, "$ref": f"#/$defs/{kind}"})
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == kind
    if target == "rayjob":
        assert manifest["spec"]["entrypoint"] == "mlrt run jobs/digits.yaml --set train.epochs=3"
    else:  # the embedded Serve config is the one `--target serve` renders
        serve = yaml.safe_load(manifest["spec"]["serveConfigV2"])
        assert serve["applications"][0]["route_prefix"] == "/digits"


def test_serve_unknown_model_exits_2_before_ray(workdir):
    result = mlrt("serve", "models:/nope@champion", cwd=workdir, timeout=120)
    assert result.returncode == 2 and "no registered model 'nope'" in result.stderr
    bad_port = mlrt("serve", "jobs/digits.yaml", "--port", "70000", cwd=workdir, timeout=120)
    assert bad_port.returncode == 2 and "Invalid value for '--port'" in bad_port.stderr


def test_deploy_checks_the_model_and_the_api_key_before_contacting_the_cluster(workdir):
    """Port 1 has no cluster: both errors must come first, exit 2, naming what is wrong."""
    nobody = ["--address", "http://127.0.0.1:1"]
    unknown = mlrt("deploy", "models:/nope@champion", *nobody, cwd=workdir, timeout=120)
    assert unknown.returncode == 2 and "no registered model 'nope'" in unknown.stderr
    no_key = mlrt("deploy", "jobs/digits.yaml", *nobody, "--set",
                  "serve.auth.api_key_env=MLRT_TEST_UNSET_KEY", cwd=workdir, timeout=120)
    assert no_key.returncode == 2
    assert "serve.auth.api_key_env: set MLRT_TEST_UNSET_KEY" in no_key.stderr


def test_render_several_specs_gives_one_app_each(workdir):
    from ray.serve.schema import ServeDeploySchema

    result = mlrt("render", "jobs/digits.yaml", "jobs/digits_tune.yaml", "--target", "serve",
                  cwd=workdir)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    ServeDeploySchema.model_validate(config)
    assert [(a["name"], a["route_prefix"]) for a in config["applications"]] == [
        ("digits-mlp", "/digits"), ("digits-mlp-tuned", "/digits-tuned")]
    service = mlrt("render", "jobs/digits.yaml", "jobs/digits_tune.yaml", "--target",
                   "rayservice", cwd=workdir)
    assert service.returncode == 0, service.stderr
    inner = yaml.safe_load(yaml.safe_load(service.stdout)["spec"]["serveConfigV2"])
    assert len(inner["applications"]) == 2
    job = mlrt("render", "jobs/digits.yaml", "jobs/digits_tune.yaml", "--target", "rayjob",
               cwd=workdir)
    assert job.returncode == 2 and "renders the job of one spec, got 2" in job.stderr


def test_route_clash_exits_2_naming_both_specs_before_ray(workdir):
    two = _spec_copy(workdir, "clash.yaml", name="bc-clash", serve={"route": "/bc/v2"})
    one = _spec_copy(workdir, "clash-outer.yaml", serve={"route": "/bc"})
    for command in (["serve"], ["render", "--target", "serve"],
                    ["deploy", "--address", "http://127.0.0.1:1"]):
        args = [*command[:1], one, two, *command[1:]]
        result = mlrt(*args, cwd=workdir, timeout=120)
        assert result.returncode == 2, (command, result.stderr)
        assert f"{one} and {two} clash (/bc and /bc/v2)" in result.stderr, result.stderr


def test_serve_two_specs_each_on_its_own_route(trained):
    workdir = trained
    two = _spec_copy(workdir, "bc-two.yaml", name="bc-two", serve={"route": "/two"})
    one = _spec_copy(workdir, "bc-one.yaml", serve={"route": "/one"})
    second = mlrt("run", two, *LOGREG, cwd=workdir)
    assert second.returncode == 0, second.stderr[-3000:]
    port = free_port()
    proc = subprocess.Popen([MLRT, "serve", one, two, "--port", str(port)], cwd=workdir,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        urls = wait_for_urls(proc, 2, timeout_s=300)
        assert urls == [f"http://127.0.0.1:{port}/one", f"http://127.0.0.1:{port}/two"]
        names = [_predict(url)["model"]["name"] for url in urls]
        assert names == ["breast-cancer-hgb", "bc-two"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/routes", timeout=30) as r:
            routes = json.loads(r.read())
        assert routes.get("/one") == "breast-cancer-hgb" and routes.get("/two") == "bc-two"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _predict(url: str) -> dict:
    request = urllib.request.Request(f"{url}/predict", json.dumps({"instances": [[1.0] * 30]})
                                     .encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def test_serve_runs_in_the_foreground_and_stops_on_sigterm(trained):
    workdir = trained
    port = free_port()
    proc = subprocess.Popen([MLRT, "serve", "jobs/breast_cancer.yaml", "--port", str(port)],
                            cwd=workdir, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    try:
        [url] = wait_for_urls(proc, 1, timeout_s=240)
        assert url == f"http://127.0.0.1:{port}"
        body = _predict(url)
        assert body["model"] == {"name": "breast-cancer-hgb", "version": "1"}
        assert len(body["probabilities"][0]) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=5)


def test_serve_checks_capture_names_before_ray_and_sigterm_writes_the_queue(trained):
    """`--set 'serve.capture=...'`: a name the model does not take, or hashing without the
    salt, exits 2 naming the field; a graceful stop writes what was still queued."""
    workdir = trained
    typo = mlrt("serve", "jobs/breast_cancer.yaml", "--set",
                "serve.capture={exclude: [mean radiuss]}", cwd=workdir, timeout=120)
    assert typo.returncode == 2
    assert "serve.capture.exclude[0]: 'mean radiuss' is not a feature" in typo.stderr
    no_salt = mlrt("serve", "jobs/breast_cancer.yaml", "--set",
                   "serve.capture={hash: [mean radius], salt_env: MLRT_TEST_UNSET_SALT}",
                   cwd=workdir, timeout=120)
    assert no_salt.returncode == 2
    assert "serve.capture.salt_env: set MLRT_TEST_UNSET_SALT" in no_salt.stderr
    port = free_port()
    proc = subprocess.Popen([MLRT, "serve", "jobs/breast_cancer.yaml", "--port", str(port),
                             "--set", "serve.capture={flush_s: 3600}"], cwd=workdir,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        [url] = wait_for_urls(proc, 1, timeout_s=240)
        request_id = _predict(url)["request_id"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    import pyarrow.parquet as pq

    files = sorted((workdir / ".mlrt/captures/breast-cancer-hgb").rglob("*.parquet"))
    assert files, "nothing written on shutdown"
    ids = pq.read_table(files, columns=["request_id"], partitioning=None).column(0).to_pylist()
    assert request_id in ids


def test_render_watch_writes_a_cronjob_that_fits_the_schema(workdir):
    import jsonschema

    schema = json.loads((ROOT / "tests/data/cronjob_schema.json").read_text())
    k8s = ["--set", "storage=s3://bucket/mlrt", "--set", "serve.capture={}",
           "--set", "monitor.interval=30m"]
    result = mlrt("render", "jobs/digits.yaml", "--target", "watch", *k8s, "-o", "watch.yaml",
                  cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "kubectl apply -f watch.yaml" in result.stderr
    text = (workdir / "watch.yaml").read_text()
    assert "kubectl create secret generic digits-mlp-ray-token" in text  # the step before
    manifest = yaml.safe_load(text)
    jsonschema.validate(manifest, {**schema, "$ref": "#/$defs/CronJob"})
    assert manifest["spec"]["schedule"] == "*/30 * * * *"
    (container,) = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["mlrt", "watch", "jobs/digits.yaml"]
    assert "--once" in container["command"]


def test_render_watch_refusals_exit_2_naming_the_field(workdir):
    k8s = ["--set", "storage=s3://bucket/mlrt", "--set", "serve.capture={}"]
    odd = mlrt("render", "jobs/digits.yaml", "--target", "watch", *k8s,
               "--set", "monitor.interval=7m", cwd=workdir)
    assert odd.returncode == 2
    assert "monitor.interval: 7m cannot be a cron schedule" in odd.stderr
    local = mlrt("render", "jobs/digits.yaml", "--target", "watch", "--set", "serve.capture={}",
                 cwd=workdir)
    assert local.returncode == 2 and "storage: '.mlrt' is a local path" in local.stderr
    blind = mlrt("render", "jobs/digits.yaml", "--target", "watch", "--set",
                 "storage=s3://bucket/mlrt", cwd=workdir)
    assert blind.returncode == 2 and "serve.capture: the watcher judges" in blind.stderr
