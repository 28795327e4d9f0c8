"""End to end: a search whose driver is SIGKILLed mid-search continues with `--resume RUN_ID`,
keeping the trials that had finished (their results are not touched again)."""

from __future__ import annotations

import re
import subprocess
import time

import mlflow
import pytest
import yaml
from user import MLRT  # tests/e2e/user.py

pytestmark = pytest.mark.e2e
SAMPLES = 6
SPEC = {
    "name": "e2e-tune",
    "task": "classification",
    "storage": ".mlrt",
    "data": {"source": {"kind": "sklearn", "name": "digits"},
             "split": {"test": 0.2, "validation": 0.1, "seed": 7},
             "preprocess": [{"op": "standard_scale"}]},
    "model": {"kind": "torch_mlp", "hidden": [64]},
    # small batches: an epoch takes long enough that some trials are mid-way at the kill
    "train": {"epochs": 8, "batch_size": 8, "lr": 0.003, "workers": 1},
    "tune": {"metric": "val_accuracy", "mode": "max", "samples": SAMPLES, "concurrent": 2,
             "scheduler": {"kind": "fifo"}, "search": {"kind": "random"},
             "space": {"train.lr": {"loguniform": [1e-3, 1e-2]}}},
    "evaluate": {"gate": {"metric": "accuracy", "min": 0.5}},
}
FINISHED = re.compile(r"trial (\S+) finished after")


def _finished(text: str) -> list[str]:
    return FINISHED.findall(text)


def test_killed_search_resumes_without_rerunning_finished_trials(tmp_path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    log = tmp_path / "first.log"
    done_before: list[str] = []
    with log.open("w") as out:
        driver = subprocess.Popen([MLRT, "run", "spec.yaml"], cwd=tmp_path, stdout=out,
                                  stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 420
            while time.monotonic() < deadline and driver.poll() is None:
                done_before = _finished(log.read_text())
                if len(done_before) >= 2:
                    # Tune snapshots the search every second (TUNE_GLOBAL_CHECKPOINT_S=1): a
                    # trial that finished within the last second of a kill would be restored
                    # from its final checkpoint, not rerun, but it would count as unfinished.
                    time.sleep(2)
                    break
                time.sleep(0.2)
            assert driver.poll() is None, "the search ended before it could be killed:\n" + (
                log.read_text()[-3000:])
            driver.kill()  # SIGKILL: no cleanup runs in the driver
        finally:
            driver.kill()
            driver.wait()
    first = log.read_text()
    assert 2 <= len(done_before) < SAMPLES, first[-3000:]
    run_id = re.search(r"--resume (\w+)", first).group(1)
    tune_dir = next((tmp_path / ".mlrt" / "ray_tune").glob(f"*-{run_id}"))
    results_before = {t: (tune_dir / t / "result.json").read_bytes() for t in done_before}

    resumed = subprocess.run([MLRT, "run", "spec.yaml", "--resume", run_id], cwd=tmp_path,
                             capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed the stored search" in resumed.stderr
    done_after = _finished(resumed.stderr)
    assert not set(done_before) & set(done_after), (done_before, done_after)
    every = set(_finished(first)) | set(done_after)
    assert len(every) == SAMPLES
    for trial, before in results_before.items():  # finished trials: not one more epoch
        assert (tune_dir / trial / "result.json").read_bytes() == before

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / '.mlrt' / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)  # the same MLflow run finished the job
    assert run.info.status == "FINISHED" and run.data.metrics["test_accuracy"] > 0.5
    children = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
                                  search_all_experiments=True, output_format="list")
    assert sorted(c.data.tags["mlrt.trial_id"] for c in children) == sorted(every)
    assert "e2e-tune v1" in resumed.stdout


def test_bad_search_space_exits_2_before_ray_starts(tmp_path):
    bad = {**SPEC, "tune": {**SPEC["tune"], "space": {
        "train.lr": {"loguniform": [1e-3, 1e-2]}, "train.epochs": {"uniform": [2, 6]}}}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run([MLRT, "run", "spec.yaml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "tune.space.train.epochs: uniform value" in result.stderr
    assert "use randint or choice" in result.stderr
    assert not (tmp_path / ".mlrt").exists()  # nothing ran
