"""Tune's OptunaSearch, made safe to restore: `mlrt run|submit --resume` of an Optuna search.

When a search's driver is killed, the restored search can hold trials that the searcher's own
saved state does not know (seen on S3 storage: Tune's trial list and the searcher's state are
separate objects, and the kill can land between their uploads). Two things then go wrong in
Ray 2.60, each fixed here:
- OptunaSearch fails the whole resumed search with `KeyError: '<trial id>'` at such a trial's
  first result. Here the trial runs on: Tune still records its results (mlrt ranks trials from
  Tune's results, not from Optuna), only Optuna's sampler does not learn from it, which one
  warning says.
- SearchGenerator's count of the trials it created is as old as its saved state, so it makes
  as many new trials as it lost and the search runs more than `tune.samples`. Here the count is
  brought up to the restored trial list.

Imported only when `tune.search.kind: optuna`; a module of its own so that the class pickles
by name with the search (Tune saves the searcher and brings it back on restore).
"""

from __future__ import annotations

import glob
import json
import logging
import os

from ray.tune.execution.tune_controller import TuneController
from ray.tune.search import SearchGenerator
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger("mlrt.tune")


class ResumableOptunaSearch(OptunaSearch):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._warned: set[str] = set()  # pickled with the search: one warning per trial

    def _unknown(self, trial_id: str) -> bool:
        if trial_id in self._ot_trials or trial_id in self._completed_trials:
            return False
        if trial_id not in self._warned:
            self._warned.add(trial_id)
            logger.warning("tune: trial %s was restored without Optuna's record of it (the "
                           "driver was stopped mid-save); it runs on and is ranked, but does "
                           "not steer the search", trial_id)
        return True

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if not self._unknown(trial_id):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if self._unknown(trial_id):
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)


class ResumableSearchGenerator(SearchGenerator):
    """A SearchGenerator that never creates more trials than the search asks for on restore."""

    def restore_from_dir(self, dirpath: str) -> None:
        super().restore_from_dir(dirpath)
        # Tune copies the stored experiment state beside the searcher's before calling this;
        # the newest one is the trial list the resumed search continues (same choice as Tune)
        pattern = TuneController.CKPT_FILE_TMPL.format("*")
        states = sorted(glob.glob(os.path.join(dirpath, pattern)))
        if not states:
            return
        with open(states[-1]) as f:
            created = len(json.load(f)["trial_data"])
        if created > self._counter:
            logger.warning("tune: the stored search holds %d trials, its searcher's saved "
                           "state %d (the driver was stopped mid-save); counting %d so that "
                           "no extra trial is made", created, self._counter, created)
            self._counter = created
