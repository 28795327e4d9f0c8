"""End to end: `mlrt predict` as a user runs it, on a model `mlrt run` registered."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from user import mlrt, user_dir  # tests/e2e/user.py

pytestmark = pytest.mark.e2e
URI = "models:/breast-cancer-hgb@champion"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = user_dir(tmp_path_factory, "predict")
    ran = mlrt("run", "jobs/breast_cancer.yaml", cwd=work)
    assert ran.returncode == 0, ran.stderr[-3000:]
    load_breast_cancer(as_frame=True).frame.drop(columns="target").to_parquet(work / "rows.parquet")
    return work


def test_predict_writes_predictions_and_reports_rows_per_s(workdir):
    result = mlrt("predict", URI, "--input", "rows.parquet", "--output", "preds", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "569 rows -> preds" in result.stdout and "rows/s" in result.stdout
    got = pd.read_parquet(workdir / "preds")
    assert len(got) == 569 and {"prediction", "probability_0", "probability_1"} <= set(got)
    again = mlrt("predict", URI, "--input", "rows.parquet", "--output", "preds", cwd=workdir)
    assert again.returncode == 2 and "--output: preds exists" in again.stderr


def test_bad_input_exits_2_naming_the_column_and_writes_nothing(workdir):
    frame = pd.read_parquet(workdir / "rows.parquet").drop(columns="mean radius")
    frame.to_parquet(workdir / "bad.parquet")
    result = mlrt("predict", URI, "--input", "bad.parquet", "--output", "bad-out", cwd=workdir)
    assert result.returncode == 2
    assert "missing feature columns ['mean radius']" in result.stderr
    assert not (workdir / "bad-out").exists()
    assert not [p for p in workdir.iterdir() if ".mlrt-" in p.name]
    usage = mlrt("predict", "breast-cancer-hgb", "--input", "rows.parquet", "--output", "x",
                 cwd=workdir)
    assert usage.returncode == 2 and "models:/NAME@ALIAS" in usage.stderr
