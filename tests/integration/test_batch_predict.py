"""Integration: `mlrt predict`'s pipeline (runtime.inference.batch) on the session's Ray, against
the same model loaded through mlflow.pyfunc."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from factories import LOGISTIC, make_spec, mixed_rows

from runtime.errors import InputError, RegistryError
from runtime.inference.batch import resolve_input, run_batch
from runtime.pipeline.driver import run_job
from runtime.registry.uris import parse_model_uri

pytestmark = pytest.mark.integration
FEATURES = ["x1", "x2", "color"]


@pytest.fixture(scope="module")
def model(ray_session, tmp_path_factory) -> dict:
    """A registered 3-class LogisticRegression over numeric + one-hot categorical features."""
    tmp = tmp_path_factory.mktemp("batch")
    mixed_rows(600, 0).drop(columns="id").to_parquet(tmp / "train.parquet")
    spec = make_spec(
        tmp / "store", "it-batch",
        data={"source": {"kind": "parquet", "path": str(tmp / "train.parquet")},
              "target": "label", "split": {"test": 0.2, "validation": 0.0, "seed": 0},
              "preprocess": [{"op": "standard_scale", "columns": "numeric"},
                             {"op": "one_hot", "columns": ["color"]}]},
        model={**LOGISTIC, "params": {"max_iter": 500}},
        evaluate={"gate": {"metric": "accuracy", "min": 0.5}})
    summary = run_job(spec, echo=lambda _: None)
    return {"storage": str(tmp / "store"), "uri": "models:/it-batch@champion",
            "version": summary.version}


def _predict(model: dict, input_path: Path | str, output: Path, **options):
    return run_batch(model["uri"], str(input_path), str(output), storage=model["storage"],
                     echo=lambda _: None, **options)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".mlrt-" in p.name)


def test_predictions_equal_the_pyfunc_model(model, tmp_path):
    rows = mixed_rows(1000, 1).drop(columns="label")
    (tmp_path / "in").mkdir()
    rows.iloc[:400].to_parquet(tmp_path / "in" / "a.parquet")
    rows.iloc[400:].to_parquet(tmp_path / "in" / "b.parquet")

    result = _predict(model, tmp_path / "in", tmp_path / "out", batch_size=128, actors=2)

    assert result.rows == 1000 and result.model == f"it-batch/{model['version']}"
    got = pd.read_parquet(tmp_path / "out").sort_values("id").reset_index(drop=True)
    pyfunc = mlflow.pyfunc.load_model(f"models:/it-batch/{model['version']}")
    expected = pyfunc.predict(rows[FEATURES])
    classes = ["maybe", "no", "yes"]
    assert list(got.columns) == [*rows.columns, "prediction",
                                 *(f"probability_{c}" for c in classes)]
    # input columns kept as they were (Ray hands pandas pyarrow-backed dtypes: same values)
    pd.testing.assert_frame_equal(got[list(rows.columns)], rows, check_dtype=False)
    assert got["prediction"].tolist() == expected["prediction"].tolist()
    for c in classes:
        np.testing.assert_allclose(got[f"probability_{c}"], expected[f"probability_{c}"],
                                   rtol=1e-12)
    assert _leftovers(tmp_path) == []
    # dictionaries only where values repeat: the text input and the predicted class, not the
    # probabilities (trying them costs the writer most of its time, for a bigger file)
    for file in (tmp_path / "out").glob("*.parquet"):
        encoded = _dictionary_encoded(file)
        assert {"color", "prediction"} <= encoded, encoded
        assert not encoded & {"x1", *(f"probability_{c}" for c in classes)}, encoded


def _dictionary_encoded(file: Path) -> set[str]:
    meta = pq.ParquetFile(file).metadata
    return {meta.row_group(g).column(i).path_in_schema for g in range(meta.num_row_groups)
            for i in range(meta.num_columns)
            if any("DICTIONARY" in e for e in meta.row_group(g).column(i).encodings)}


def test_csv_glob_and_a_subset_of_columns(model, tmp_path):
    rows = mixed_rows(300, 2).drop(columns="label")
    rows.iloc[:100].to_csv(tmp_path / "part-1.csv", index=False)
    rows.iloc[100:].to_csv(tmp_path / "part-2.csv", index=False)

    result = _predict(model, tmp_path / "part-*.csv", tmp_path / "out", keep="id")

    got = pd.read_parquet(tmp_path / "out").sort_values("id").reset_index(drop=True)
    assert result.rows == 300
    assert list(got.columns[:2]) == ["id", "prediction"] and "x1" not in got.columns
    expected = mlflow.pyfunc.load_model(model["uri"]).predict(rows[FEATURES])
    assert got["prediction"].tolist() == expected["prediction"].tolist()


def test_missing_feature_column_fails_before_any_output(model, tmp_path):
    mixed_rows(50, 3).drop(columns=["label", "x2"]).to_parquet(tmp_path / "rows.parquet")
    with pytest.raises(InputError, match=r"missing feature columns \['x2'\]"):
        _predict(model, tmp_path / "rows.parquet", tmp_path / "out")
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_wrong_typed_column_fails_before_any_output(model, tmp_path):
    rows = mixed_rows(50, 4).drop(columns="label")
    rows["x1"] = rows["x1"].astype(str)
    rows.to_parquet(tmp_path / "rows.parquet")
    with pytest.raises(InputError, match=r"column 'x1' has type .*string.* is numeric"):
        _predict(model, tmp_path / "rows.parquet", tmp_path / "out")
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_bad_file_found_mid_run_leaves_previous_output_intact(model, tmp_path):
    """The first csv file is fine (the up-front schema comes from it); a later one has text in
    a numeric column. The run fails naming the column and --output keeps what it held."""
    rows = mixed_rows(200, 5).drop(columns="label")
    (tmp_path / "in").mkdir()
    rows.iloc[:100].to_csv(tmp_path / "in" / "a.csv", index=False)
    bad = rows.iloc[100:].astype({"x2": object})
    bad.loc[150, "x2"] = "seven"
    bad.to_csv(tmp_path / "in" / "b.csv", index=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "previous.parquet").write_bytes(b"old results")

    with pytest.raises(InputError, match=r"column 'x2' has type"):
        _predict(model, tmp_path / "in", tmp_path / "out", overwrite=True)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["previous.parquet"]
    assert _leftovers(tmp_path) == []


def test_model_uri_and_input_errors_name_the_value(model, tmp_path):
    with pytest.raises(InputError, match="models:/NAME@ALIAS .* got 'it-batch'"):
        parse_model_uri("it-batch")
    assert parse_model_uri("models:/m/3") == ("m", "3", None)
    with pytest.raises(RegistryError, match="no alias 'nope'"):
        run_batch("models:/it-batch@nope", str(tmp_path), str(tmp_path / "o"),
                  fmt="parquet", storage=model["storage"])
    with pytest.raises(InputError, match=r"--input: not found: .*missing\.parquet"):
        resolve_input(str(tmp_path / "missing.parquet"))
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(InputError, match="pass --format"):
        resolve_input(str(tmp_path / "data.txt"))
    assert resolve_input(str(tmp_path / "data.txt"), "csv") == ([str(tmp_path / "data.txt")],
                                                                 "csv")
