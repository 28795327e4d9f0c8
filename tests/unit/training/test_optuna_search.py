"""A resumed Optuna search whose saved searcher state is older than Tune's trial list: the
trial Optuna does not know runs on instead of failing the whole search (KeyError in Ray 2.60's
OptunaSearch, seen when a driver writing to S3 was killed)."""

from __future__ import annotations

import json
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


def _generator_saved_one_trial_early(cls, tmp_path, samples: int = 4):
    """The state a kill between two uploads leaves: Tune's trial list holds `samples` trials,
    the searcher's saved state was written when it had made `samples - 1`."""
    from ray.tune.search import ConcurrencyLimiter, SearchGenerator

    def generator():
        limiter = ConcurrencyLimiter(ResumableOptunaSearch(space=SPACE, metric="accuracy",
                                                           mode="max", seed=0), 2)
        return cls(limiter) if cls is not SearchGenerator else SearchGenerator(limiter)

    saved = generator()
    saved._total_samples, saved._counter = samples, samples - 1
    saved.save_to_dir(str(tmp_path), "2026-12-02_10-00-00")
    trial_list = [[json.dumps({"trial_id": f"t{i}", "status": "RUNNING"}), "{}"]
                  for i in range(samples)]
    (tmp_path / "experiment_state-2026-12-02_10-00-00.json").write_text(
        json.dumps({"trial_data": trial_list}))
    restored = generator()
    restored.restore_from_dir(str(tmp_path))
    return restored


def test_stock_generator_makes_one_trial_more_than_the_search_asks_for(tmp_path):
    from ray.tune.search import SearchGenerator

    restored = _generator_saved_one_trial_early(SearchGenerator, tmp_path)
    assert not restored.is_finished()  # it would make a 5th trial of 4


def test_the_restored_generator_counts_the_restored_trials(tmp_path, caplog):
    from runtime.training.optuna_search import ResumableSearchGenerator

    with caplog.at_level(logging.WARNING, logger="mlrt.tune"):
        restored = _generator_saved_one_trial_early(ResumableSearchGenerator, tmp_path)
    assert restored.is_finished()  # all 4 exist: no new trial
    assert any("holds 4 trials" in r.getMessage() for r in caplog.records)
