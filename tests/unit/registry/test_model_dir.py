"""Saved model directories: safe formats only, and predictions equal the in-memory model's."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from runtime.errors import InputError, UnsafeModelError
from runtime.features.state import PreprocessState
from runtime.inference.predictor import Predictor
from runtime.registry.model_dir import ModelMeta, save_model_dir
from runtime.spec import PythonModel, SklearnModel, TorchMLP
from runtime.training.models import build_model

STATE = PreprocessState.from_json({
    "version": 1, "features": ["a", "b"], "feature_types": {"a": "numeric", "b": "numeric"},
    "steps": [{"op": "standard_scale", "columns": ["a", "b"], "mean": {"a": 1.0, "b": 0.0},
               "std": {"a": 2.0, "b": 1.0}}]})


@pytest.fixture
def rows():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(1, 2, 200), "b": rng.normal(0, 1, 200)})
    labels = np.where(frame["a"] - 1 + frame["b"] > 0, "yes", "no")
    return frame, labels


def _meta(framework, spec=None, n_out=2):
    meta = {"framework": framework, "task": "classification", "classes": ["no", "yes"],
            "features": ["a", "b"], "target": "t"}
    if spec is not None:
        meta["architecture"] = {"spec": spec.model_dump(mode="json"), "n_in": 2, "n_out": n_out}
    return ModelMeta.from_json(meta)


def test_sklearn_round_trip_through_skops(tmp_path, rows):
    frame, labels = rows
    spec = SklearnModel(kind="sklearn", estimator="sklearn.linear_model.LogisticRegression")
    x = (frame.to_numpy() - [1.0, 0.0]) / [2.0, 1.0]
    model = build_model(spec, 2, 2).fit(x, labels)
    save_model_dir(tmp_path, _meta("sklearn"), STATE, model)
    assert {p.name for p in tmp_path.iterdir()} == {"model.skops", "preprocess.json",
                                                    "mlrt_model.json"}
    predictions, proba = Predictor.load(tmp_path).predict(frame)
    assert list(predictions) == list(model.predict(x))
    np.testing.assert_allclose(proba, model.predict_proba(x), rtol=1e-5)  # float32 inputs


def test_torch_round_trip_through_safetensors(tmp_path, rows):
    import torch

    frame, _ = rows
    spec = TorchMLP(kind="torch_mlp", hidden=[8])
    model = build_model(spec, 2, 2).eval()
    save_model_dir(tmp_path, _meta("torch", spec), STATE, model)
    assert (tmp_path / "model.safetensors").exists()
    loaded = Predictor.load(tmp_path)
    x = torch.tensor(((frame.to_numpy() - [1.0, 0.0]) / [2.0, 1.0]), dtype=torch.float32)
    with torch.no_grad():
        expected = model(x).argmax(1).numpy()
    predictions, proba = loaded.predict(frame)
    assert list(predictions) == [["no", "yes"][i] for i in expected]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    out = loaded.predict_frame(frame)
    assert list(out.columns) == ["prediction", "probability_no", "probability_yes"]


class Sneaky:  # a type outside scikit-learn/numpy/scipy: skops must not instantiate it
    def fit(self, x, y):
        return self

    def predict(self, x):
        return np.zeros(len(x))


def test_skops_file_with_foreign_types_is_refused(tmp_path, rows):
    save_model_dir(tmp_path, _meta("sklearn"), STATE, Sneaky())
    with pytest.raises(UnsafeModelError, match="Sneaky"):
        Predictor.load(tmp_path)


def test_python_builder_from_user_code(tmp_path, monkeypatch):
    pkg = tmp_path / "userjobs"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent("""
        import torch.nn as nn

        def build(n_features, n_outputs, width=4):
            return nn.Sequential(nn.Linear(n_features, width), nn.Tanh(),
                                 nn.Linear(width, n_outputs))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = PythonModel(kind="python", builder="userjobs.nets:build", params={"width": 3})
    model = build_model(spec, 5, 2)
    assert model[0].out_features == 3 and model[0].in_features == 5
    with pytest.raises(InputError, match="model.builder: module 'userjobs.nets' has no 'nope'"):
        build_model(PythonModel(kind="python", builder="userjobs.nets:nope"), 5, 2)
    with pytest.raises(InputError, match="model.builder: cannot import module 'nothere'"):
        build_model(PythonModel(kind="python", builder="nothere:build"), 5, 2)
    sys.modules.pop("userjobs.nets", None)


def test_bad_estimator_params_name_the_field():
    spec = SklearnModel(kind="sklearn", estimator="sklearn.linear_model.LogisticRegression",
                        params={"nonsense": 1})
    with pytest.raises(InputError, match="model.params: .*nonsense"):
        build_model(spec, 2, 2)
    with pytest.raises(InputError, match="model.estimator: module 'sklearn.linear_model' has no"):
        build_model(SklearnModel(kind="sklearn", estimator="sklearn.linear_model.Nope"), 2, 2)
