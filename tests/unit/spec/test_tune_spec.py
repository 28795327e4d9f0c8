"""Unit: the tune section is checked against the spec's fields before Ray starts; a trial's
spec is the base spec with the trial's values; the summary table ranks trials."""

from __future__ import annotations

import pytest

from runtime.spec import SpecError, parse_spec
from runtime.training.tune import TrialRecord, max_epochs, param_space, top_table, trial_spec

BASE = {
    "name": "t",
    "task": "classification",
    "data": {"source": {"kind": "sklearn", "name": "digits"}},
    "model": {"kind": "torch_mlp", "hidden": [32]},
    "train": {"epochs": 4},
}


def _tuned(space: dict | None = None, **tune) -> dict:
    return {**BASE, "tune": {"space": space or {"train.lr": {"loguniform": [1e-4, 1e-1]}},
                             **tune}}


def _errors(raw: dict) -> list[str]:
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    return e.value.errors


@pytest.mark.parametrize(("space", "expected"), [
    ({"train.lrr": {"uniform": [0.1, 1]}}, "tune.space.train.lrr: names no field: train has "
                                           "no 'lrr'"),
    ({"train": {"uniform": [0.1, 1]}}, "tune.space.train: names a section"),
    ({"train.epochs": {"uniform": [2, 8]}},
     "tune.space.train.epochs: uniform value 4.226 does not fit: train.epochs: must be a valid "
     "integer"),
    ({"train.epochs": {"randint": [0, 5]}},
     "tune.space.train.epochs: randint value 0 does not fit: train.epochs: must be >= 1"),
    ({"train.lr": {"choice": [0.1, -1]}},
     "tune.space.train.lr: choice value -1 does not fit: train.lr: must be > 0"),
    ({"model.hidden": {"choice": [[64], "wide"]}},
     "tune.space.model.hidden: choice value 'wide' does not fit: model.hidden: must be a "
     "valid list"),
    ({"model.dropout": {"uniform": [0.0, 1.5]}},
     "tune.space.model.dropout: uniform value 1.5 does not fit: model.dropout: must be < 1"),
    ({"train.use_gpu": {"grid": [False, "maybe"]}},
     "tune.space.train.use_gpu: grid value 'maybe' does not fit"),
    ({"train.lr": {"randint": [0.5, 2]}}, "train.lr: randint needs integer bounds"),
    ({"train.lr": {"loguniform": [0, 1]}}, "train.lr: loguniform needs low > 0"),
    ({"tune.samples": {"choice": [2, 4]}},
     "tune.space.tune.samples: the search cannot tune its own settings"),
])
def test_space_errors_name_the_path(space, expected):
    errors = _errors(_tuned(space))
    assert any(expected in e for e in errors), errors


def test_every_probe_of_a_continuous_domain_fits_or_the_spec_fails():
    # randint's high is exclusive: [1, 3] gives 1 or 2, both valid epochs
    parse_spec(_tuned({"train.epochs": {"randint": [1, 3]}}))
    parse_spec(_tuned({"train.batch_size": {"choice": [16, 32]},
                       "model.dropout": {"uniform": [0.0, 0.5]}}))


@pytest.mark.parametrize(("tune", "expected"), [
    ({"search": {"kind": "grid"}}, "tune.search.kind: grid search needs grid or choice "
                                   "domains; train.lr are sampled"),
    ({"search": {"kind": "optuna"}, "space": {"train.lr": {"grid": [0.1, 0.01]}}},
     "tune.search.kind: optuna cannot search grid domains (train.lr); use choice"),
    ({"metric": "accuracy"}, "tune.metric: 'accuracy' is not reported by training"),
    ({"metric": "val_rmse"}, "tune.metric: 'val_rmse' is not reported by training"),
    ({"scheduler": {"kind": "hyperband"}}, "tune.scheduler"),
    ({"scheduler": {"kind": "asha", "grace_period": 5}},  # train.epochs is 4
     "tune.scheduler.grace_period: 5 is more than the most epochs a trial runs (4)"),
])
def test_tune_settings_errors(tune, expected):
    raw = _tuned()
    raw["tune"].update(tune)
    errors = _errors(raw)
    assert any(expected in e for e in errors), errors


def test_validation_metric_needs_a_validation_split():
    raw = _tuned(metric="val_accuracy")
    raw["data"] = {**raw["data"], "split": {"validation": 0}}
    assert any("tune.metric: 'val_accuracy' needs a validation split" in e
               for e in _errors(raw))


def test_sklearn_models_are_not_tuned():
    raw = _tuned()
    raw["model"] = {"kind": "sklearn", "estimator": "sklearn.linear_model.LogisticRegression"}
    assert any(e.startswith("tune: tuning needs a torch model") for e in _errors(raw))


def test_trial_spec_sets_values_at_their_paths_and_revalidates():
    base = parse_spec(BASE).model_dump(mode="json")
    spec = trial_spec(base, {"train.lr": 0.02, "model.hidden": [8, 4]})
    assert spec.train.lr == 0.02 and spec.model.hidden == [8, 4]
    assert spec.train.epochs == 4  # untouched fields stay
    with pytest.raises(SpecError, match="train.lr: must be > 0"):
        trial_spec(base, {"train.lr": -1.0})


def test_param_space_maps_domains_to_tune():
    from ray.tune.search.sample import Categorical, Float, Integer

    spec = parse_spec(_tuned({"train.lr": {"loguniform": [1e-4, 1e-1]},
                              "train.epochs": {"randint": [2, 6]},
                              "model.hidden": {"choice": [[8], [16]]},
                              "train.batch_size": {"grid": [16, 32]}}))
    space = param_space(spec.tune)
    assert isinstance(space["train.lr"], Float) and isinstance(space["train.epochs"], Integer)
    assert isinstance(space["model.hidden"], Categorical)
    assert space["train.batch_size"] == {"grid_search": [16, 32]}
    assert max_epochs(spec) == 5  # randint's high is exclusive: ASHA's max_t


def test_grid_search_turns_choices_into_grid_points():
    spec = parse_spec(_tuned({"model.hidden": {"choice": [[8], [16]]}},
                             search={"kind": "grid"}))
    assert param_space(spec.tune)["model.hidden"] == {"grid_search": [[8], [16]]}


def test_top_table_ranks_by_the_last_reported_metric():
    trials = [
        TrialRecord("a", {"train.lr": 0.1}, "TERMINATED",
                    [{"epoch": 1, "val_accuracy": 0.5}, {"epoch": 2, "val_accuracy": 0.7}]),
        TrialRecord("b", {"train.lr": 0.01}, "TERMINATED", [{"epoch": 1, "val_accuracy": 0.9}]),
        TrialRecord("c", {"train.lr": 0.001}, "ERROR", []),
    ]
    lines = top_table(trials, "val_accuracy", "max")
    assert lines[0].split()[:4] == ["rank", "trial", "val_accuracy", "epochs"]
    assert [line.split()[1] for line in lines[1:]] == ["b", "a"]  # c never reported
    assert lines[1].split()[2:4] == ["0.9000", "1"] and "train.lr=0.01" in lines[1]
    assert [line.split()[1] for line in top_table(trials, "val_accuracy", "min")[1:]] == [
        "a", "b"]
