"""Integration: parquet and csv sources read through Ray Data; regression end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import LOGISTIC, make_spec, spec_data

from runtime.data.table import load_table
from runtime.errors import InputError
from runtime.pipeline.driver import run_job
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
                   {"kind": "csv", "path": str(tmp_path / "csv" / "*.csv")}):
        table = load_table(Data(source=source, target="label"), "classification")
        assert table.rows == 300
        assert table.feature_types == {"x1": "numeric", "x2": "numeric", "color": "categorical"}
        assert table.classes == [0, 1]
    with pytest.raises(InputError, match=r"data.source.path: no files match .*\*.tsv"):
        load_table(Data(source={"kind": "csv", "path": str(tmp_path / "csv" / "*.tsv")},
                        target="label"), "classification")
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
    spec = make_spec(
        tmp_path / "store", "it-colors", model=LOGISTIC,
        data={"source": {"kind": "parquet", "path": str(tmp_path / "data.parquet")},
              "target": "label",
              "preprocess": [{"op": "impute"}, {"op": "standard_scale"},
                             {"op": "one_hot", "columns": ["color"]}]})
    summary = run_job(spec, echo=lambda _: None)
    assert summary.verdict.passed and 0.0 <= summary.metrics["accuracy"] <= 1.0


def test_regression_torch_job(ray_session, tmp_path):
    spec = make_spec(
        tmp_path / "store", "it-diabetes", task="regression",
        data={"source": {"kind": "sklearn", "name": "diabetes"},
              "preprocess": [{"op": "standard_scale"}]},
        train={"epochs": 30, "lr": 0.01, "batch_size": 32, "workers": 1},
        evaluate={"gate": {"metric": "rmse", "min": 70.0}})  # predicting the mean: ~77
    summary = run_job(spec, echo=lambda _: None)
    assert set(summary.metrics) == {"rmse", "mae", "r2"}
    assert summary.verdict.passed and summary.metrics["r2"] > 0.2


def _people(tmp_path, on_fail: str) -> dict:
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"age": rng.integers(18, 90, 400).astype(float),
                          "income": rng.normal(50, 10, 400),
                          "label": rng.integers(0, 2, 400)})
    frame.loc[:4, "age"] = [-1, 150, 200, -5, 300]  # five impossible ages
    frame.to_parquet(tmp_path / "people.parquet")
    return spec_data(
        tmp_path / "store", f"it-checks-{on_fail.replace('_', '-')}", model=LOGISTIC,
        data={"source": {"kind": "parquet", "path": str(tmp_path / "people.parquet")},
              "target": "label", "preprocess": [{"op": "standard_scale"}],
              "checks": {"min_rows": 100, "on_fail": on_fail,
                         "columns": {"age": {"dtype": "numeric", "min": 0, "max": 120}}}})


def test_failed_checks_stop_and_leave_a_sample_in_the_run(ray_session, tmp_path):
    import mlflow

    from runtime.errors import DataCheckError

    with pytest.raises(DataCheckError, match=r"columns.age.max: 3 rows of 'age' above 120.0"):
        run_job(parse_spec(_people(tmp_path, "stop")), echo=lambda _: None)
    client = mlflow.MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("it-checks-stop").experiment_id])[0]
    assert run.info.status == "FAILED" and run.data.tags["mlrt.failed_stage"] == "data"
    sample = pd.read_csv(client.download_artifacts(run.info.run_id,
                                                   "data_checks/failing_rows_sample.csv"))
    assert sorted(sample["failed_check"].unique()) == ["columns.age.max", "columns.age.min"]
    assert len(sample) == 5


def test_drop_rows_trains_on_the_rest_and_profile_ships_with_the_model(ray_session, tmp_path):
    import json

    import mlflow

    lines: list[str] = []
    summary = run_job(parse_spec(_people(tmp_path, "drop_rows")), echo=lines.append)
    assert "  dropped 5 rows failing columns.age.min, columns.age.max" in lines
    model = mlflow.pyfunc.load_model(f"models:/it-checks-drop-rows/{summary.version}")
    model_dir = Path(model._model_impl.context.artifacts["model_dir"])
    profile = json.loads((model_dir / "profile.json").read_text())
    assert profile["features"]["age"]["min"] >= 0 and profile["features"]["age"]["max"] <= 120
    assert set(profile["features"]) == {"age", "income"}


def test_synthetic_source_is_generated_in_parallel_and_deterministic(ray_session):
    import pyarrow as pa
    import ray

    from runtime.data import sources as data
    from runtime.data.scan import frame_fingerprint
    from runtime.spec import SyntheticSource

    def rows(source):
        ds = data.synthetic_dataset(source, size=1000)  # 5 chunks, as Ray tasks
        return pa.concat_tables(ray.get(ds.to_arrow_refs())).to_pandas()

    source = SyntheticSource(kind="synthetic", rows=4500, features=3, classes=3, seed=4)
    parallel = rows(source)
    assert len(parallel) == 4500 and set(parallel["target"]) == {0, 1, 2}
    serial = pd.concat([data.synthetic_chunk(source, i, 1000) for i in range(5)])
    pd.testing.assert_frame_equal(parallel.sort_values(["x0", "x1"]).reset_index(drop=True),
                                  serial.sort_values(["x0", "x1"]).reset_index(drop=True),
                                  check_dtype=False)
    other = rows(SyntheticSource(kind="synthetic", rows=4500, features=3, classes=3, seed=5))
    assert frame_fingerprint(other) != frame_fingerprint(parallel)


def test_small_files_are_read_in_memory_with_the_streamed_result(ray_session, tmp_path, frame,
                                                                 monkeypatch):
    """Files below IN_MEMORY_BELOW_BYTES are read once into the driver (no Ray Data pipeline):
    the same rows, split, classes and fingerprint as the Ray Data pass over the same files.
    Hidden files and, for parquet, other extensions are skipped as Ray's readers skip them."""
    from runtime.data import table as table_module

    (tmp_path / "csv").mkdir()
    frame.iloc[:120].to_csv(tmp_path / "csv" / "a.csv", index=False)
    frame.iloc[120:].to_csv(tmp_path / "csv" / "b.csv", index=False)
    (tmp_path / "csv" / ".~lock.a.csv#").write_text("not, a row\n")
    (tmp_path / "pq").mkdir()
    frame.iloc[:200].to_parquet(tmp_path / "pq" / "part-0.parquet")
    frame.iloc[200:].to_parquet(tmp_path / "pq" / "part-1.parquet")
    (tmp_path / "pq" / "README.txt").write_text("written by the export job\n")
    for source in ({"kind": "csv", "path": str(tmp_path / "csv")},
                   {"kind": "parquet", "path": str(tmp_path / "pq")}):
        data = Data(source=source, target="label", split={"test": 0.25, "validation": 0.1})
        in_memory = load_table(data, "classification")
        with monkeypatch.context() as m:
            m.setattr(table_module, "IN_MEMORY_BELOW_BYTES", 0)
            streamed = load_table(data, "classification")
        assert in_memory.frames is not None and streamed.frames is None, source
        assert in_memory.rows == streamed.rows == 300
        assert in_memory.fingerprint == streamed.fingerprint
        assert in_memory.split_rows == streamed.split_rows
        assert in_memory.classes == streamed.classes == [0, 1]
        assert in_memory.feature_types == streamed.feature_types
        columns = [*in_memory.features, "label"]
        mine = in_memory.frames["test"][columns].sort_values(columns).reset_index(drop=True)
        theirs = streamed.dataset("test").to_pandas()[columns].sort_values(columns)
        pd.testing.assert_frame_equal(mine, theirs.reset_index(drop=True), check_dtype=False)


def test_hive_partitioned_and_broken_small_files(ray_session, tmp_path, frame):
    """Hive-style folders stay with Ray's reader (it adds the partition column); a small file
    that is not CSV fails with the field named, like a large one."""
    for color, part in frame.groupby("color"):
        (tmp_path / "hive" / f"color={color}").mkdir(parents=True)
        part.drop(columns="color").to_parquet(tmp_path / "hive" / f"color={color}" / "0.parquet")
    table = load_table(Data(source={"kind": "parquet", "path": str(tmp_path / "hive")},
                            target="label"), "classification")
    assert table.frames is None and "color" in table.features and table.rows == 300
    (tmp_path / "bad.csv").write_bytes(b"a,b\n1,2\n3,4,5\n")
    with pytest.raises(InputError, match=r"data.source.path: cannot read csv at .*bad.csv"):
        load_table(Data(source={"kind": "csv", "path": str(tmp_path / "bad.csv")}, target="b"),
                   "classification")
