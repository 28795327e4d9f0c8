"""Integration: hyperparameter search on the shared Ray, real Tune, real MLflow sqlite store.

Tiny searches (2-3 trials of 2-3 epochs on digits) exercise each scheduler and search
algorithm, the MLflow child runs, and that the registered model is the best trial's checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from factories import spec_data
from safetensors.torch import load_file

from runtime.pipeline.driver import run_job
from runtime.registry import tracking
from runtime.spec import parse_spec

pytestmark = pytest.mark.integration


def _spec(tmp_path: Path, name: str, tune: dict, train: dict | None = None) -> dict:
    return spec_data(tmp_path / "store", name,
                     tune={"metric": "val_accuracy", "mode": "max", "concurrent": 2, **tune},
                     evaluate={"gate": {"metric": "accuracy", "min": 0.5}},
                     set={f"train.{k}": v for k, v in (train or {}).items()})


def _children(run_id: str) -> list:
    return mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
                              search_all_experiments=True, output_format="list")


def test_asha_random_search_registers_the_best_trials_checkpoint(ray_session, tmp_path):
    spec = _spec(tmp_path, "it-tune-asha", {
        "samples": 3, "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
        "search": {"kind": "random"},
        "space": {"train.lr": {"loguniform": [1e-4, 3e-2]},
                  "model.hidden": {"choice": [[16], [48]]}}})
    lines: list[str] = []
    summary = run_job(parse_spec(spec), echo=lines.append)
    assert "[tune] done" in " ".join(lines) and not any("[train]" in line for line in lines)
    assert summary.trials == 3 and summary.best_trial

    # one child run per trial, with the trial's values and per-epoch metrics
    children = _children(summary.run_id)
    assert sorted(c.data.tags["mlrt.trial_id"] for c in children) == sorted(
        p.name for p in _tune_dir(tmp_path, summary.run_id).iterdir() if p.is_dir())
    client = mlflow.MlflowClient()
    for child in children:
        assert {"train.lr", "model.hidden"} <= set(child.data.params)
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy")]
        assert steps == list(range(1, len(steps) + 1)) and steps
    best_child = next(c for c in children if c.data.tags["mlrt.trial_id"] == summary.best_trial)
    assert best_child.data.metrics["val_accuracy"] == max(
        c.data.metrics["val_accuracy"] for c in children
        if int(c.data.tags["mlrt.epochs"]) == 3)

    # the run records the best config, the plot and the best spec
    run = client.get_run(summary.run_id)
    assert run.data.tags["mlrt.tune.best_trial"] == summary.best_trial
    assert run.data.params["tune.best.model.hidden"] == best_child.data.params["model.hidden"]
    artifacts = {a.path for a in client.list_artifacts(summary.run_id, "tune")}
    assert "tune/tune_search.png" in artifacts
    best_spec = yaml.safe_load(mlflow.artifacts.load_text(
        f"runs:/{summary.run_id}/best_spec.yaml"))
    assert best_spec["model"]["hidden"] == yaml.safe_load(best_child.data.params["model.hidden"])
    assert "tune" not in best_spec

    # the registered model's weights are the best trial's checkpoint, bit for bit
    tracking.use_store(str(tmp_path / "store"))
    model = mlflow.pyfunc.load_model("models:/it-tune-asha@champion")
    registered = load_file(Path(model._model_impl.context.artifacts["model_dir"])
                           / "model.safetensors")
    checkpoint = next((_tune_dir(tmp_path, summary.run_id) / summary.best_trial)
                      .glob("checkpoint_*/model.safetensors"))
    trial_weights = load_file(checkpoint)
    assert registered.keys() == trial_weights.keys()
    assert all(torch.equal(registered[k], trial_weights[k]) for k in registered)


def test_fifo_grid_search_runs_each_point_once_in_process_and_distributed(ray_session,
                                                                          tmp_path):
    """Grid over train.workers: the 1-worker trial runs the loop in the trial's process, the
    2-worker trial a TorchTrainer inside the trial; both report per epoch and checkpoint."""
    spec = _spec(tmp_path, "it-tune-grid", {
        "samples": 5, "concurrent": 1, "scheduler": {"kind": "fifo"}, "search": {"kind": "grid"},
        "space": {"train.workers": {"grid": [1, 2]}}}, train={"epochs": 2})
    summary = run_job(parse_spec(spec), echo=lambda _: None)
    children = _children(summary.run_id)
    assert sorted(c.data.params["train.workers"] for c in children) == ["1", "2"]
    assert all(c.data.tags["mlrt.epochs"] == "2" for c in children)
    assert summary.metrics["accuracy"] > 0.5


def test_optuna_search(ray_session, tmp_path):
    spec = _spec(tmp_path, "it-tune-optuna", {
        "samples": 2, "scheduler": {"kind": "fifo"}, "search": {"kind": "optuna"},
        "space": {"train.lr": {"loguniform": [1e-3, 3e-2]},
                  "model.dropout": {"uniform": [0.0, 0.2]}}}, train={"epochs": 2})
    summary = run_job(parse_spec(spec), echo=lambda _: None)
    children = _children(summary.run_id)
    assert len(children) == 2
    assert all(c.data.tags["mlrt.trial_status"] == "TERMINATED" for c in children)
    lrs = {c.data.params["train.lr"] for c in children}
    assert len(lrs) == 2  # two different proposals


def _tune_dir(tmp_path: Path, run_id: str) -> Path:
    return next((tmp_path / "store" / "ray_tune").glob(f"*-{run_id}"))
