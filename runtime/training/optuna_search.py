"""Tune's OptunaSearch, made safe to restore: `mlrt run|submit --resume` of an Optuna search.

When a search's driver is killed, the restored search can hold a trial that Optuna's own saved
state does not know (seen on S3 storage: Tune's trial list and the searcher's state are
separate objects, and the kill can land between their uploads). Ray 2.60's OptunaSearch then
fails the whole resumed search with `KeyError: '<trial id>'` at that trial's first result.
Here such a trial runs on: Tune still records its results (mlrt ranks trials from Tune's
results, not from Optuna), only Optuna's sampler does not learn from it, which one warning says.

Imported only when `tune.search.kind: optuna`; a module of its own so that the class pickles
by name with the search (Tune saves the searcher and brings it back on restore).
"""

from __future__ import annotations

import logging

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
