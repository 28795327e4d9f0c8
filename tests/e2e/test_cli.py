"""End to end: the `mlrt` CLI as a user runs it, in a fresh directory, on a local Ray."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from user import mlrt, user_dir  # tests/e2e/user.py

from runtime.data.table import load_table
from runtime.registry import tracking
from runtime.spec import load_spec

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return user_dir(tmp_path_factory, "user")


def test_help_is_enough_to_start(workdir):
    result = mlrt("--help", cwd=workdir)
    assert result.returncode == 0
    for command in ("validate", "run", "models", "spec-schema"):
        assert command in result.stdout
    run_help = mlrt("run", "--help", cwd=workdir).stdout
    assert "--set" in run_help and "--address" in run_help


def test_bad_spec_exits_2_before_ray_starts(workdir):
    result = mlrt("run", "jobs/digits.yaml", "--set", "train.workers=0",
                  "--set", "model.hiden=[8]", cwd=workdir)
    assert result.returncode == 2
    assert "train.workers: must be >= 1, got 0" in result.stderr
    assert "model.hiden: unknown field 'hiden'; did you mean 'hidden'?" in result.stderr
    assert not (workdir / ".mlrt").exists()  # nothing ran, nothing written


def test_validate_and_schema(workdir):
    ok = mlrt("validate", "jobs/digits.yaml", "--set", "train.epochs=3", cwd=workdir)
    assert ok.returncode == 0 and "epochs: 3" in ok.stdout
    schema = json.loads(mlrt("spec-schema", cwd=workdir).stdout)
    assert "train" in schema["properties"]
    missing = mlrt("validate", "jobs/nope.yaml", cwd=workdir)
    assert missing.returncode == 2 and "cannot read the spec file" in missing.stderr


def test_digits_runs_end_to_end(workdir):
    result = mlrt("run", "jobs/digits.yaml", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("[ray] done", "[data] done", "[preprocess] done", "[train] done",
                  "[evaluate] done", "[register] done"):
        assert stage in result.stderr
    assert "digits-mlp v1" in result.stdout and "@champion -> v1" in result.stdout
    assert "mlflow ui --backend-store-uri sqlite:///.mlrt/mlflow.db" in result.stdout
    assert not (workdir / "mlruns").exists()  # artifacts live under the spec's storage
    assert any((workdir / ".mlrt" / "mlartifacts").rglob("model.safetensors"))
    # the libraries' per-run notices do not reach the console (mlrt says what happened)
    for noise in ("Add type hints", "Downloading artifacts", "Successfully registered model",
                  "Created version", "Token authentication is enabled",
                  "Creating initial MLflow database tables"):
        assert noise not in result.stderr, noise


def test_a_killed_run_is_marked_killed_by_the_next_run(workdir, tmp_path):
    """SIGKILL leaves no chance to end the MLflow run; the next run of the experiment proves
    the driver is gone (same host, no such process) and marks it KILLED."""
    import signal
    import subprocess
    import time

    from user import MLRT

    storage = str(tmp_path / "store")
    proc = subprocess.Popen([MLRT, "run", "jobs/digits.yaml", "--set", f"storage={storage}"],
                            cwd=workdir, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("[train] ..."):  # the run exists and is RUNNING
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(1)
    tracking.use_store(storage)
    (killed,) = mlflow.search_runs(experiment_names=["digits-mlp"], output_format="list")
    assert killed.info.status == "RUNNING"
    again = mlrt("run", "jobs/digits.yaml", "--set", f"storage={storage}",
                 "--set", "train.epochs=1", "--set", "evaluate.gate.min=0.1", cwd=workdir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "marked 1 earlier run(s) KILLED" in again.stderr and killed.info.run_id[:12] in \
        again.stderr
    after = mlflow.MlflowClient().get_run(killed.info.run_id)
    assert after.info.status == "KILLED" and "is gone" in after.data.tags["mlrt.ended_by"]


def test_registered_model_predicts_test_split_at_reported_accuracy(workdir, monkeypatch):
    shown = mlrt("models", "show", "digits-mlp", "@champion", cwd=workdir)
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["version"] == "1" and info["metrics"]["accuracy"] >= 0.95
    assert info["tags"]["mlrt.data_fingerprint"] and info["tags"]["mlrt.gate"] == "passed"

    monkeypatch.chdir(workdir)
    tracking.use_store(str(workdir / ".mlrt"))
    model = mlflow.pyfunc.load_model("models:/digits-mlp@champion")
    spec = load_spec(workdir / "jobs" / "digits.yaml")
    table = load_table(spec.data, spec.task)
    test = table.frames["test"]
    predicted = model.predict(test[table.features])["prediction"].to_numpy()
    accuracy = float((predicted == test[table.target].to_numpy()).mean())
    assert accuracy == pytest.approx(info["metrics"]["accuracy"], abs=1e-9)


def test_failing_gate_exits_1_and_keeps_champion(workdir):
    result = mlrt("run", "jobs/digits.yaml", "--set", "evaluate.gate.min=0.9999",
                  "--set", "train.epochs=1", "--set", "train.workers=1", cwd=workdir)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "gate failed: accuracy" in result.stderr and "< 0.9999" in result.stderr
    champion = json.loads(mlrt("models", "show", "digits-mlp", "@champion", cwd=workdir).stdout)
    assert champion["version"] == "1"
    failed = json.loads(mlrt("models", "show", "digits-mlp", "2", cwd=workdir).stdout)
    assert failed["tags"]["mlrt.gate"] == "failed" and failed["aliases"] == []


def test_promote_then_rollback(workdir):
    listed = mlrt("models", "list", "digits-mlp", cwd=workdir)
    assert listed.returncode == 0 and "@champion" in listed.stdout and "failed" in listed.stdout
    promoted = mlrt("models", "promote", "digits-mlp", "2", "--reason", "try v2", cwd=workdir)
    assert promoted.returncode == 0 and "digits-mlp@champion -> v2 (was v1)" in promoted.stdout
    assert json.loads(mlrt("models", "show", "digits-mlp", cwd=workdir).stdout)["version"] == "2"
    back = mlrt("models", "rollback", "digits-mlp", "--reason", "v2 is worse", cwd=workdir)
    assert back.returncode == 0 and "-> v1 (rolled back from v2)" in back.stdout
    assert json.loads(mlrt("models", "show", "digits-mlp", cwd=workdir).stdout)["version"] == "1"
    again = mlrt("models", "rollback", "digits-mlp", "--reason", "again", cwd=workdir)
    assert again.returncode == 2 and "has held no other version" in again.stderr


def test_registry_errors_name_the_problem(workdir):
    unknown = mlrt("models", "list", "nope", cwd=workdir)
    assert unknown.returncode == 2 and "no registered model 'nope'" in unknown.stderr
    assert "digits-mlp" in unknown.stderr
    bad_version = mlrt("models", "promote", "digits-mlp", "99", "--reason", "x", cwd=workdir)
    assert bad_version.returncode == 2 and "has no version 99" in bad_version.stderr


def test_shipped_sklearn_job(workdir):
    result = mlrt("run", "jobs/breast_cancer.yaml", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "breast-cancer-hgb v1" in result.stdout and "@champion -> v1" in result.stdout
    shown = json.loads(mlrt("models", "show", "breast-cancer-hgb", cwd=workdir).stdout)
    assert shown["metrics"]["accuracy"] >= 0.9
