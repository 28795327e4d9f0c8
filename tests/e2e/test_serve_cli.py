"""End to end: `mlrt render --target serve`, and `mlrt serve` in the foreground as a user runs
it (its own local Ray), answering over HTTP and stopping cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from user import MLRT, ROOT, mlrt, user_dir  # tests/e2e/user.py

from runtime.serving import free_port

pytestmark = pytest.mark.e2e
LOGREG = ["--set", "model.estimator=sklearn.linear_model.LogisticRegression",
          "--set", "model.params={max_iter: 300}"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return user_dir(tmp_path_factory, "serve-user")


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

    schema = json.loads((ROOT / "tests/unit/data/kuberay_crd_schema.json").read_text())
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


def test_serve_runs_in_the_foreground_and_stops_on_sigterm(workdir):
    trained = mlrt("run", "jobs/breast_cancer.yaml", *LOGREG, cwd=workdir)
    assert trained.returncode == 0, trained.stderr[-3000:]
    port = free_port()
    proc = subprocess.Popen([MLRT, "serve", "jobs/breast_cancer.yaml", "--port", str(port)],
                            cwd=workdir, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    try:
        url = _wait_for_url(proc, timeout_s=240)
        assert url == f"http://127.0.0.1:{port}"
        row = [1.0] * 30
        request = urllib.request.Request(f"{url}/predict",
                                         json.dumps({"instances": [row]}).encode(),
                                         {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as r:
            body = json.loads(r.read())
        assert body["model"] == {"name": "breast-cancer-hgb", "version": "1"}
        assert len(body["probabilities"][0]) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=5)


def _wait_for_url(proc: subprocess.Popen, timeout_s: float) -> str:
    """The URL `mlrt serve` prints; stderr keeps being drained so that the server never blocks
    on a full pipe."""
    seen: list[str] = []
    found = threading.Event()

    def drain() -> None:
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("serving ") and " at http" in line:
                found.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not found.wait(0.5) and proc.poll() is None and time.monotonic() < deadline:
        pass
    for line in seen:
        if line.startswith("serving ") and " at http" in line:
            return line.split(" at ", 1)[1].split()[0]
    raise AssertionError("mlrt serve printed no URL:\n" + "".join(seen[-40:]))
