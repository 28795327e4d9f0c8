"""Integration: real Ray (one per session), real Ray Train, real MLflow sqlite store."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import psutil
import pytest
from factories import spec_data

from runtime.errors import TrainingError
from runtime.pipeline.driver import run_job
from runtime.registry import tracking, versions
from runtime.spec import parse_spec

pytestmark = pytest.mark.integration


# two Train workers, 6 epochs: ~0.95 accuracy on digits (a worker group even for data this
# small: single_process_below_mb 0)
TWO_WORKERS = {"model": {"kind": "torch_mlp", "hidden": [64]},
               "train": {"epochs": 6, "batch_size": 64, "lr": 0.005, "workers": 2,
                         "single_process_below_mb": 0},
               "evaluate": {"gate": {"metric": "accuracy", "min": 0.9}}}


def _spec(tmp_path: Path, name: str = "it-digits", **sections) -> dict:
    return spec_data(tmp_path / "store", name, **{**TWO_WORKERS, **sections})


def test_two_worker_training_registers_a_gated_model(ray_session, tmp_path):
    lines: list[str] = []
    summary = run_job(parse_spec(_spec(tmp_path)), echo=lines.append)
    assert summary.verdict.passed and summary.metrics["accuracy"] >= 0.9
    assert [line for line in lines if line.startswith("[") and "done in" in line] == [
        f"[{stage}] done in {summary.timings[stage]:.1f}s"
        for stage in ("ray", "data", "preprocess", "train", "evaluate", "register")
    ]
    tracking.use_store(str(tmp_path / "store"))
    champion = versions.version_by_alias("it-digits", "champion")
    assert champion is not None and champion.version == summary.version
    # lineage on the version
    assert champion.tags["mlrt.data_fingerprint"] and champion.tags["mlrt.spec_hash"]
    # per-epoch history went to the run: both workers' shards counted
    history = mlflow.MlflowClient().get_metric_history(summary.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6]


def test_pyfunc_model_applies_its_own_preprocessing(ray_session, tmp_path):
    summary = run_job(parse_spec(_spec(tmp_path, name="it-pyfunc")), echo=lambda _: None)
    model = mlflow.pyfunc.load_model("models:/it-pyfunc@champion")
    from sklearn.datasets import load_digits

    raw = load_digits(as_frame=True).frame
    predictions = model.predict(raw.drop(columns="target"))
    accuracy = float((predictions["prediction"].to_numpy() == raw["target"].to_numpy()).mean())
    # all rows (train + test) of raw, unscaled pixels: scaling happens inside the model
    assert accuracy >= summary.metrics["accuracy"] - 0.05
    files = {p.name for p in Path(_model_dir(model)).rglob("*") if p.is_file()}
    assert {"model.safetensors", "preprocess.json", "mlrt_model.json"} <= files
    assert not any(name.endswith((".pkl", ".pickle")) for name in files)


def _model_dir(model) -> str:
    return model._model_impl.context.artifacts["model_dir"]


def test_sklearn_estimator_fits_in_a_ray_task(ray_session, tmp_path):
    spec = _spec(tmp_path, name="it-bc",
                 data={"source": {"kind": "sklearn", "name": "breast_cancer"},
                       "preprocess": [{"op": "min_max_scale"}]},
                 model={"kind": "sklearn",
                        "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
                        "params": {"max_iter": 50}})
    summary = run_job(parse_spec(spec), echo=lambda _: None)
    assert summary.metrics["accuracy"] > 0.9
    model = mlflow.pyfunc.load_model("models:/it-bc@champion")
    assert "model.skops" in {p.name for p in Path(_model_dir(model)).iterdir()}


def test_ray_preprocessor_state_matches_the_shared_transform(ray_session):
    """The JSON state replayed by transform_frame equals Ray Data's own transform."""
    import ray.data
    from ray.data.preprocessors import Chain, MinMaxScaler, OneHotEncoder, StandardScaler

    from runtime.features.apply import transform_frame
    from runtime.features.fit import fit_state
    from runtime.spec import Data

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(5, 2, 300), "b": rng.uniform(-1, 3, 300),
                          "color": rng.choice(["red", "green", "blue"], 300)})
    ops = Data(source={"kind": "csv", "path": "x"}, preprocess=[
        {"op": "standard_scale", "columns": ["a"]}, {"op": "min_max_scale", "columns": ["b"]},
        {"op": "one_hot", "columns": ["color"]}]).preprocess
    types = {"a": "numeric", "b": "numeric", "color": "categorical"}
    state = fit_state(list(ops), ray.data.from_pandas(frame), types)
    ours = transform_frame(state, frame)

    chain = Chain(StandardScaler(["a"]), MinMaxScaler(["b"]), OneHotEncoder(["color"]))
    theirs = chain.fit(ray.data.from_pandas(frame)).transform_batch(frame.copy())
    expected = np.column_stack([theirs["a"], theirs["b"], np.stack(theirs["color"].to_numpy())])
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


def test_killed_worker_resumes_from_checkpoint(ray_session, tmp_path):
    """SIGKILL a training worker after a checkpoint; the run resumes from it and registers."""
    spec = parse_spec(_spec(
        tmp_path, name="it-kill",
        data={"source": {"kind": "synthetic", "rows": 60000, "features": 32, "classes": 3},
              "preprocess": [{"op": "standard_scale"}]},
        model={"kind": "torch_mlp", "hidden": [256, 256]},
        train={"epochs": 8, "batch_size": 64, "workers": 2, "max_failures": 2,
               "checkpoint_every": 1, "single_process_below_mb": 0},
        evaluate={"gate": {"metric": "accuracy", "min": 0.5}},
    ))
    outcome, killed = _run_and_kill(spec, tmp_path / "store" / "ray_train",
                                    "ray::RayTrainWorker")
    _assert_resumed(outcome, killed, epochs=8)


def test_small_data_trains_in_one_task_that_resumes_after_its_process_is_killed(
        ray_session, tmp_path):
    """Below train.single_process_below_mb the loop runs in one Ray task, not a worker group of
    `workers`; SIGKILL its process after a checkpoint: Ray runs the task again, it resumes
    from the checkpoint on storage, and the run registers with every epoch's history."""
    spec = parse_spec(_spec(
        tmp_path, name="it-one-task",
        # 12k x 64 float32 = 2.9 MiB model-ready: below the default 4 MiB
        data={"source": {"kind": "synthetic", "rows": 12000, "features": 64, "classes": 3},
              "preprocess": [{"op": "standard_scale"}]},
        model={"kind": "torch_mlp", "hidden": [512, 512]},
        train={"epochs": 8, "batch_size": 16, "workers": 2, "max_failures": 2,
               "checkpoint_every": 1},
        evaluate={"gate": {"metric": "accuracy", "min": 0.5}},
    ))
    outcome, killed = _run_and_kill(spec, tmp_path / "store" / "ray_train", "ray::task_loop")
    _assert_resumed(outcome, killed, epochs=8)
    lines = outcome["lines"]
    assert any("one process trains, not a worker group of 2" in line for line in lines), lines
    kept = sorted(p.name for p in (tmp_path / "store" / "ray_train").glob("*/checkpoint_*"))
    assert kept == ["checkpoint_000007", "checkpoint_000008"]  # the last two


def test_one_task_training_killed_without_retries_fails_clearly_and_registers_nothing(
        ray_session, tmp_path):
    """train.max_failures 0: the killed task is not run again; the run fails naming the
    field, and no version is registered."""
    spec = parse_spec(_spec(
        tmp_path, name="it-one-task-dies",
        data={"source": {"kind": "synthetic", "rows": 12000, "features": 64, "classes": 3}},
        model={"kind": "torch_mlp", "hidden": [512, 512]},
        train={"epochs": 8, "batch_size": 16, "max_failures": 0, "checkpoint_every": 1},
    ))
    outcome, killed = _run_and_kill(spec, tmp_path / "store" / "ray_train", "ray::task_loop")
    assert killed, "no checkpoint appeared while training ran"
    assert isinstance(outcome.get("error"), TrainingError), outcome
    assert "training failed after 0 retries (train.max_failures)" in str(outcome["error"])
    tracking.use_store(str(tmp_path / "store"))
    assert versions.version_by_alias("it-one-task-dies", "champion") is None


def _assert_resumed(outcome: dict, killed: bool, epochs: int) -> None:
    """The killed run resumed from a checkpoint, passed its gate, and logged every epoch."""
    assert killed, "no checkpoint appeared while training ran"
    assert "error" not in outcome, outcome.get("error")
    summary = outcome["summary"]
    assert summary.restarts >= 1
    assert summary.verdict.passed
    history = mlflow.MlflowClient().get_metric_history(summary.run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))


def _run_and_kill(spec, train_dir: Path, process: str) -> tuple[dict, bool]:
    """Run the job in a thread; SIGKILL the first `process` once checkpoints exist. Returns
    ({"summary" or "error", "lines": the run's output}, whether a process was killed)."""
    outcome: dict = {"lines": []}

    def _run():
        try:
            outcome["summary"] = run_job(spec, echo=outcome["lines"].append)
        except BaseException as e:  # surfaced by the caller's assertion
            outcome["error"] = e

    thread = threading.Thread(target=_run)
    thread.start()
    killed = _kill_a_worker_after_a_checkpoint(train_dir, thread, process)
    thread.join(timeout=600)
    return outcome, killed


def _kill_a_worker_after_a_checkpoint(train_dir: Path, thread: threading.Thread,
                                      process: str) -> bool:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and thread.is_alive():
        # two finished checkpoints: the first is surely registered with the controller by now
        if len(list(train_dir.glob("*/checkpoint_*/progress.json"))) >= 2:
            for proc in psutil.process_iter(["cmdline"]):
                if process in " ".join(proc.info["cmdline"] or []):
                    proc.kill()
                    return True
        time.sleep(0.2)
    return False
