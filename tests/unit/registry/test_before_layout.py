"""Model versions registered before the package layout still load and predict the same.

tests/data/before_layout holds two versions as MLflow stores them (torch MLP and scikit-learn,
with impute, clip, log1p, scaling and one-hot preprocessing), downloaded after `mlrt run` of
spec.yaml at commit 5118ce5, and their predictions then (`*.expected.json`, from
`mlflow.pyfunc` of the same version on rows.json: a null and an unseen category included).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from runtime.features.state import PreprocessState
from runtime.inference.predictor import Predictor
from runtime.registry.model_dir import META_FILE, STATE_FILE, ModelMeta
from serve_apps.validate import Features

DATA = Path(__file__).parents[2] / "data" / "before_layout"
VERSIONS = ["before-layout", "before-layout-sk"]


def _rows() -> pd.DataFrame:
    return pd.read_json(DATA / "rows.json", orient="records")


def _expected(name: str) -> pd.DataFrame:
    return pd.read_json(DATA / f"{name}.expected.json", orient="split")


def _model_dir(name: str) -> Path:
    return next((DATA / name / "artifacts").iterdir())


@pytest.mark.parametrize("name", VERSIONS)
def test_the_json_files_round_trip_unchanged(name):
    for file, kind in ((STATE_FILE, PreprocessState), (META_FILE, ModelMeta)):
        on_disk = json.loads((_model_dir(name) / file).read_text())
        assert kind.from_json(on_disk).to_json() == on_disk


@pytest.mark.parametrize("name", VERSIONS)
def test_predictor_gives_the_predictions_made_before(name):
    predicted = Predictor.load(_model_dir(name)).predict_frame(_rows())
    pd.testing.assert_frame_equal(predicted, _expected(name), check_dtype=False, rtol=1e-6)


@pytest.mark.parametrize("name", VERSIONS)
def test_mlflow_pyfunc_runs_the_old_entry_point(name):
    """The version's own copy of the pyfunc code (`from runtime.inference import Predictor`)."""
    import mlflow.pyfunc

    entry_point = (DATA / name / "pyfunc_model.py").read_text()
    assert "from runtime.inference import Predictor" in entry_point
    model = mlflow.pyfunc.load_model(str(DATA / name))
    pd.testing.assert_frame_equal(model.predict(_rows()), _expected(name), check_dtype=False,
                                  rtol=1e-6)


def test_a_replica_reads_the_old_state_as_before():
    state = Predictor.load(_model_dir("before-layout")).state
    features = Features.from_state(state)
    assert features.names == ("a", "b", "color")
    assert features.categorical == {"color"} and features.nullable == {"a", "color"}
