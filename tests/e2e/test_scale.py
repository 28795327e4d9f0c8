"""End to end at scale: a dataset three times larger than Ray's object store trains to
completion, streamed from its source (the driver holds summaries, never the rows)."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml
from user import MLRT  # tests/e2e/user.py

pytestmark = pytest.mark.e2e
OBJECT_STORE = 100 * 1024**2


def test_dataset_three_times_the_object_store_trains(tmp_path):
    rows, features = 1_300_000, 64  # float32: 1.3M x 64 x 4 B = 333 MB > 3 x 100 MiB
    assert rows * features * 4 > 3 * OBJECT_STORE
    spec = {
        "name": "big-stream", "task": "classification",
        "data": {"source": {"kind": "synthetic", "rows": rows, "features": features,
                            "classes": 2, "seed": 1},
                 "split": {"test": 0.05, "validation": 0.0, "seed": 0},
                 "preprocess": [{"op": "standard_scale"}]},
        "model": {"kind": "torch_mlp", "hidden": [16]},
        "train": {"epochs": 1, "batch_size": 4096, "workers": 2, "lr": 0.01},
        "evaluate": {"metrics": ["accuracy"], "gate": {"metric": "accuracy", "min": 0.6}},
    }
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "MLRT_OBJECT_STORE_BYTES": str(OBJECT_STORE)}
    done = subprocess.run([MLRT, "run", "big.yaml"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=1500, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{rows} rows, {features} features" in done.stderr
    assert "big-stream v1" in done.stdout and "@champion -> v1" in done.stdout
