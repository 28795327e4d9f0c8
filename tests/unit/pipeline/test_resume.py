"""Unit: `mlrt run --resume RUN_ID` refuses, with the reason, a run it cannot continue (no Ray:
a real MLflow sqlite store in a temp dir)."""

from __future__ import annotations

import mlflow
import pytest
from factories import make_spec

from runtime.errors import InputError
from runtime.pipeline.driver import _start_run
from runtime.registry import tracking


def test_resume_refuses_runs_it_cannot_continue_and_reopens_the_right_one(tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # use_store sets it; restored afterwards
    storage = str(tmp_path / "store")
    spec = make_spec(storage, "r", tune={"space": {"train.lr": {"loguniform": [1e-4, 1e-1]}}})
    tracking.use_store(storage)
    experiment = tracking.experiment_id(spec.name, storage)
    client = mlflow.MlflowClient()
    same = {"mlrt.spec_hash": spec.spec_hash()}

    def refusal(run_id: str) -> str:
        with pytest.raises(InputError) as e, _start_run(spec, experiment, run_id):
            pass
        return str(e.value)

    assert "no such run" in refusal("0" * 32)
    finished = client.create_run(experiment, tags=same).info.run_id
    client.set_terminated(finished)
    assert "that run already finished" in refusal(finished)
    assert "started from another spec" in refusal(
        client.create_run(experiment, tags={"mlrt.spec_hash": "other"}).info.run_id)
    elsewhere = client.create_experiment("elsewhere")
    assert "belongs to another experiment" in refusal(
        client.create_run(elsewhere, tags=same).info.run_id)
    deleted = client.create_run(experiment, tags=same).info.run_id
    client.delete_run(deleted)
    assert "that run was deleted" in refusal(deleted)
    died = client.create_run(experiment, tags=same).info.run_id  # a driver killed mid-search
    with _start_run(spec, experiment, died) as run:
        assert run.info.run_id == died
