"""Test data factories shared by unit, integration and e2e tests: job specs as plain data.

    from factories import spec_data
    raw = spec_data(tmp_path / "store", "it-digits", train={"epochs": 3})
    spec = parse_spec(raw)

A spec starts from a small runnable digits job (torch MLP, standard scaling, a test and a
validation split); keyword arguments replace whole top-level sections, `set` sets dotted paths
inside them (`set={"train.workers": 2}`). `tests/` is on pytest's import path (pyproject).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runtime.spec import JobSpec, parse_spec, set_paths

DIGITS = {"source": {"kind": "sklearn", "name": "digits"},
          "split": {"test": 0.2, "validation": 0.1, "seed": 7},
          "preprocess": [{"op": "standard_scale"}]}
BREAST_CANCER = {"source": {"kind": "sklearn", "name": "breast_cancer"}, "target": "target",
                 "split": {"test": 0.25, "validation": 0.0, "seed": 0},
                 "preprocess": [{"op": "standard_scale", "columns": "numeric"}]}
TORCH_MLP = {"kind": "torch_mlp", "hidden": [32]}
LOGISTIC = {"kind": "sklearn", "estimator": "sklearn.linear_model.LogisticRegression"}


def spec_data(storage: str | Path, name: str = "t-job", *, task: str = "classification",
              set: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    """A spec as plain data (what a YAML file holds), ready for parse_spec or yaml.dump."""
    raw: dict[str, Any] = {
        "name": name, "task": task, "storage": str(storage),
        "data": DIGITS, "model": TORCH_MLP,
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.005, "workers": 1},
    }
    raw.update(sections)
    raw = json.loads(json.dumps(raw))  # a copy: the module's constants stay as they are
    return set_paths(raw, set or {})


def make_spec(storage: str | Path, name: str = "t-job", **options: Any) -> JobSpec:
    """spec_data, validated."""
    return parse_spec(spec_data(storage, name, **options))


def mixed_rows(n: int, seed: int) -> pd.DataFrame:
    """A table with numeric (x1, x2) and categorical (color) features, a 3-class string label
    (maybe / no / yes) that depends on all three, and an `id` column that is no feature."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"id": np.arange(n), "x1": rng.normal(size=n),
                          "x2": rng.integers(0, 9, n),
                          "color": rng.choice(["red", "green", "blue"], n)})
    score = frame["x1"] + 0.3 * (frame["x2"] - 4) + np.where(frame["color"] == "red", 1.0, -0.5)
    frame["label"] = np.where(score > 0.5, "yes", np.where(score > -0.5, "maybe", "no"))
    return frame
