"""Integration: parquet and csv sources read through Ray Data; regression end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from runtime.data import load_table
from runtime.driver import run_job
from runtime.errors import InputError
from runtime.spec import Data, parse_spec

pytestmark = pytest.mark.integration


@pytest.fixture
def frame():
    rng = np.random.default_rng(1)
    return pd.DataFrame({"x1": rng.normal(size=300), "x2": rng.integers(0, 9, 300),
                         "color": rng.choice(["red", "blue"], 300),
                         "label": rng.integers(0, 2, 300)})


def test_parquet_directory_and_csv_glob(ray_session, tmp_path, frame):
    (tmp_path / "pq").mkdir()
    frame.iloc[:150].to_parquet(tmp_path / "pq" / "part-0.parquet")
    frame.iloc[150:].to_parquet(tmp_path / "pq" / "part-1.parquet")
    (tmp_path / "csv").mkdir()
    frame.iloc[:100].to_csv(tmp_path / "csv" / "a.csv", index=False)
    frame.iloc[100:].to_csv(tmp_path / "csv" / "b.csv", index=False)
    for source in ({"kind": "parquet", "path": str(tmp_path / "pq")},
                   {"kind": "csv", "path": str(tmp_path / "csv")}):
        table = load_table(Data(source=source, target="label"), "classification")
        assert table.rows == 300
        assert table.feature_types == {"x1": "numeric", "x2": "numeric", "color": "categorical"}
        assert table.classes == [0, 1]
    uri = (tmp_path / "pq").as_uri()  # pyarrow filesystem URI
    assert load_table(Data(source={"kind": "parquet", "path": uri}, target="label"),
                      "classification").rows == 300


def test_missing_source_path_is_a_clear_error(ray_session, tmp_path):
    with pytest.raises(InputError, match=r"data.source.path: not found: .*nope"):
        load_table(Data(source={"kind": "parquet", "path": str(tmp_path / "nope")}),
                   "classification")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"data.source.path"):
        load_table(Data(source={"kind": "csv", "path": str(tmp_path / "empty")}),
                   "classification")


def test_categorical_parquet_job_with_one_hot(ray_session, tmp_path, frame):
    frame.to_parquet(tmp_path / "data.parquet")
    spec = parse_spec({
        "name": "it-colors", "task": "classification", "storage": str(tmp_path / "store"),
        "data": {"source": {"kind": "parquet", "path": str(tmp_path / "data.parquet")},
                 "target": "label",
                 "preprocess": [{"op": "impute"}, {"op": "standard_scale"},
                                {"op": "one_hot", "columns": ["color"]}]},
        "model": {"kind": "sklearn", "estimator": "sklearn.linear_model.LogisticRegression"},
    })
    summary = run_job(spec, echo=lambda _: None)
    assert summary.verdict.passed and 0.0 <= summary.metrics["accuracy"] <= 1.0


def test_regression_torch_job(ray_session, tmp_path):
    spec = parse_spec({
        "name": "it-diabetes", "task": "regression", "storage": str(tmp_path / "store"),
        "data": {"source": {"kind": "sklearn", "name": "diabetes"},
                 "preprocess": [{"op": "standard_scale"}]},
        "model": {"kind": "torch_mlp", "hidden": [32]},
        "train": {"epochs": 30, "lr": 0.01, "batch_size": 32, "workers": 1},
        "evaluate": {"gate": {"metric": "rmse", "min": 70.0}},  # predicting the mean: ~77
    })
    summary = run_job(spec, echo=lambda _: None)
    assert set(summary.metrics) == {"rmse", "mae", "r2"}
    assert summary.verdict.passed and summary.metrics["r2"] > 0.2
