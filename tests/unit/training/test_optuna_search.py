"""A resumed Optuna search whose saved searcher state is older than Tune's trial list: the
trial Optuna does not know runs on instead of failing the whole search (KeyError in Ray 2.60's
OptunaSearch, seen when a driver writing to S3 was killed)."""

from __future__ import annotations

import logging

import pytest
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from runtime.training.optuna_search import ResumableOptunaSearch

SPACE = {"lr": tune.uniform(0.001, 0.1)}


def _searcher(cls, path=None):
    searcher = cls(space=SPACE, metric="accuracy", mode="max", seed=0)
    if path is not None:
        searcher.restore(str(path))
    return searcher


def _saved_before_second_trial(cls, tmp_path):
    """Trial t1 suggested, the searcher saved, then t2 suggested: the state a kill leaves."""
    first = _searcher(cls)
    assert first.suggest("t1") is not None
    first.save(str(tmp_path / "searcher.pkl"))
    assert first.suggest("t2") is not None
    return _searcher(cls, tmp_path / "searcher.pkl")


def test_stock_optuna_search_fails_on_the_trial_it_lost(tmp_path):
    restored = _saved_before_second_trial(OptunaSearch, tmp_path)
    with pytest.raises(KeyError, match="t2"):
        restored.on_trial_result("t2", {"accuracy": 0.5, "training_iteration": 1})


def test_the_lost_trial_runs_on_and_the_known_one_still_steers_optuna(tmp_path, caplog):
    restored = _saved_before_second_trial(ResumableOptunaSearch, tmp_path)
    with caplog.at_level(logging.WARNING, logger="mlrt.tune"):
        restored.on_trial_result("t2", {"accuracy": 0.5, "training_iteration": 1})
        restored.on_trial_result("t2", {"accuracy": 0.6, "training_iteration": 2})
        restored.on_trial_complete("t2", {"accuracy": 0.6, "training_iteration": 2})
    warnings = [r.getMessage() for r in caplog.records if "t2" in r.getMessage()]
    assert len(warnings) == 1 and "does not steer the search" in warnings[0]
    restored.on_trial_result("t1", {"accuracy": 0.7, "training_iteration": 1})
    restored.on_trial_complete("t1", {"accuracy": 0.9, "training_iteration": 2})
    done = [t for t in restored._ot_study.trials if t.value is not None]
    assert [t.value for t in done] == [0.9]  # t1 told Optuna; t2 did not
    assert restored.suggest("t3") is not None  # the search goes on
