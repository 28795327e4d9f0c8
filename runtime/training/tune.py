"""Hyperparameter search with Ray Tune, driven by the spec's `tune:` section.

    mlrt run jobs/digits_tune.yaml                    # search, then evaluate/register the best
    mlrt run jobs/digits_tune.yaml --resume RUN_ID    # the driver died mid-search: continue it

A trial is the spec with the trial's values set at their dotted paths, validated again, then
trained by the same loop as `mlrt run` (runtime/training/loop.py): in the trial's own process
when `train.workers == 1` (a worker group costs ~15 s a trial), by a TorchTrainer per trial
otherwise. Trials checkpoint every epoch, so the best trial's last report and its checkpoint are
the same model: that checkpoint is what gets evaluated and registered (no retrain).
The search is stored under `{storage}/ray_tune/{name}-{run_id}`; `--resume` restores it with
`Tuner.restore`: finished trials keep their results, unfinished ones continue from their last
checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from runtime.errors import TrainingError
from runtime.spec import TUNE_METRICS, JobSpec, Tune, max_epochs, parse_spec, set_paths
from runtime.training.loop import LoopConfig, trial_loop
from runtime.training.train import (
    TrainOutput,
    load_output,
    loop_config,
    model_arrays,
    torch_trainer,
)

TUNE_DIR = "ray_tune"
LOGGED_METRICS = tuple(sorted({m for task in TUNE_METRICS.values() for m in task}))
# Tune snapshots the search every 10+ s by default; a driver killed in between would rerun
# trials that had finished. Snapshots of a small search take milliseconds.
TUNE_ENV_DEFAULTS = {"TUNE_GLOBAL_CHECKPOINT_S": "1",
                     # keep the driver's working dir: `python` model builders import from it
                     "RAY_CHDIR_TO_TRIAL_DIR": "0",
                     # snapshots follow trial checkpoints (see CheckpointConfig): by design
                     "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
                     # Tune's boxed progress output; mlrt prints one line per finished trial
                     "RAY_AIR_NEW_OUTPUT": "0"}


@dataclass
class TrialRecord:
    trial_id: str
    config: dict[str, Any]  # dotted spec path -> value
    status: str  # TERMINATED (finished or stopped early) or ERROR
    history: list[dict] = field(default_factory=list)  # one metrics dict per epoch
    seconds: float = 0.0  # time inside the trial (Tune's time_total_s)

    def last(self, metric: str) -> float | None:
        values = [row[metric] for row in self.history if metric in row]
        return values[-1] if values else None


@dataclass
class SearchOutcome:
    spec: JobSpec  # the job's spec with the best trial's values merged in, no tune section
    best: TrialRecord
    output: TrainOutput  # the best trial's model, from its checkpoint
    trials: list[TrialRecord]
    path: str  # where the search is stored
    resumed: bool


# --- the space and the trial's spec (pure: no Ray) --------------------------------------------


def param_space(tune: Tune) -> dict[str, Any]:
    """Tune domains keyed by dotted spec path."""
    from ray import tune as rt

    space = {}
    for path, domain in tune.space.items():
        (kind, bounds), = domain.items()
        if kind == "grid" or (kind == "choice" and tune.search.kind == "grid"):
            space[path] = rt.grid_search(list(bounds))
        elif kind == "choice":
            space[path] = rt.choice(list(bounds))
        else:
            space[path] = {"uniform": rt.uniform, "loguniform": rt.loguniform,
                           "randint": rt.randint}[kind](*bounds)
    return space


def trial_spec(base: dict[str, Any], config: dict[str, Any]) -> JobSpec:
    """The spec a trial runs: the base spec (plain data) with each sampled value at its path,
    validated again (values were checked when the spec loaded; this keeps the trial honest)."""
    return parse_spec(set_paths(base, config), "tune trial")


# --- running trials (inside Ray) --------------------------------------------------------------


def _trial(config: dict, *, base: dict, loop: LoopConfig, datasets: dict, arrays: dict | None,
           train_storage: str, name: str) -> None:
    spec = trial_spec(base, config)
    # every epoch: the checkpoint of a trial stopped by ASHA is the model its last report scored
    train = spec.train.model_copy(update={"checkpoint_every": 1})
    cfg = dataclasses.replace(loop, train=train, model=spec.model, quiet=True)
    if train.workers == 1:
        trial_loop(cfg, arrays or datasets)
        return
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    torch_trainer(cfg, datasets, train_storage, f"{name}-{trial_id}",
                  callbacks=[TuneReportCallback()]).fit()


def _resources(base: dict):
    """Per-trial resources from the trial's train section: the loop's CPUs (and GPU) for an
    in-process trial; a sliver for a trial that only drives a TorchTrainer (its workers ask
    for their own)."""
    from ray import tune as rt

    def request(config: dict):
        train = trial_spec(base, config).train
        if train.workers > 1:
            return rt.PlacementGroupFactory([{"CPU": 0.1}])
        return rt.PlacementGroupFactory([{"CPU": train.cpus_per_worker,
                                          "GPU": 1 if train.use_gpu else 0}])

    return request


class TrialLines(Callback):
    """Prints one line per finished trial (on stderr, like the stage lines). No state: Tune
    pickles its callbacks with the search and brings them back on restore."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        shown = " ".join(f"{k}={result[k]:.4f}" for k in LOGGED_METRICS if k in result)
        print(f"  trial {trial.trial_id} finished after {result.get('epoch', 0)} epochs: "
              f"{shown}", file=sys.stderr, flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"  trial {trial.trial_id} failed", file=sys.stderr, flush=True)


def _trial_dirname(trial) -> str:
    return trial.trial_id


def search_path(storage: str, name: str) -> str:
    """Where the search lives: `storage` may be a folder or a URI (s3://...), so no pathlib."""
    return f"{storage.rstrip('/')}/{TUNE_DIR}/{name}"


def _tuner(spec: JobSpec, trainable, storage: str, name: str, resume: bool):
    from ray import tune as rt
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from runtime.data.fs import train_storage

    # the search on mlrt's filesystem for the URI (AWS_ENDPOINT_URL honoured for s3://)
    path, filesystem = train_storage(search_path(storage, name))
    if resume and rt.Tuner.can_restore(path, storage_filesystem=filesystem):
        return rt.Tuner.restore(path, trainable=trainable, resume_unfinished=True,
                                resume_errored=True, storage_filesystem=filesystem), True
    tune = spec.tune
    if tune.scheduler.kind == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", max_t=max_epochs(spec),
                                  grace_period=tune.scheduler.grace_period,
                                  reduction_factor=tune.scheduler.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    if tune.search.kind == "optuna":
        import optuna
        from ray.tune.search import ConcurrencyLimiter

        from runtime.training.optuna_search import ResumableOptunaSearch, ResumableSearchGenerator

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # list-valued choices (model.hidden) are fine in memory; Optuna warns for its storage
        warnings.filterwarnings("ignore", message="Choices for a categorical distribution")
        # wrapped here, not by Tune (max_concurrent_trials), so that the generator is ours
        search = ResumableSearchGenerator(ConcurrencyLimiter(
            ResumableOptunaSearch(seed=spec.train.seed), max_concurrent=tune.concurrent))
    else:  # Tune's max_concurrent_trials only wraps Searchers; this generator limits itself
        search = BasicVariantGenerator(random_state=spec.train.seed,
                                       max_concurrent=tune.concurrent)
    tuner = rt.Tuner(
        trainable,
        param_space=param_space(tune),
        tune_config=rt.TuneConfig(
            metric=tune.metric, mode=tune.mode, scheduler=scheduler, search_alg=search,
            num_samples=1 if tune.search.kind == "grid" else tune.samples,
            time_budget_s=tune.time_budget_s,
            trial_dirname_creator=_trial_dirname, reuse_actors=True,
        ),
        run_config=rt.RunConfig(
            name=name, storage_path=path.removesuffix(f"/{name}"),
            storage_filesystem=filesystem, verbose=0,
            failure_config=rt.FailureConfig(max_failures=spec.train.max_failures),
            # Tune forces a snapshot of the search once a trial has made num_to_keep checkpoints
            # since the last one: a restored trial then always finds the checkpoint it names.
            checkpoint_config=rt.CheckpointConfig(num_to_keep=3),
            callbacks=[TrialLines()],
        ),
    )
    return tuner, False


def run_search(spec: JobSpec, datasets: dict, n_in: int, classes: list | None,
               cache_shards: bool, storage: str, name: str, resume: bool = False
               ) -> SearchOutcome:
    """Run (or continue) the search; return the best trial's spec and model."""
    from ray import tune as rt

    for key, value in TUNE_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    base = spec.model_dump(mode="json", exclude={"tune"})
    # small data: read once here; in-process trials get the arrays from the object store
    arrays = {k: model_arrays(ds) for k, ds in datasets.items()} if cache_shards else None
    loop = loop_config(spec.train, spec.model, n_in, classes, "validation" in datasets,
                       cache_shards)
    trainable = rt.with_resources(
        rt.with_parameters(_trial, base=base, loop=loop, datasets=datasets, arrays=arrays,
                           train_storage=f"{storage}/ray_train", name=name),
        _resources(base))
    tuner, resumed = _tuner(spec, trainable, storage, name, resume)
    grid = tuner.fit()
    results = {_trial_id(r): r for r in grid}
    trials = [_record(r) for r in results.values()]
    # ranked by the last report; a trial that failed has no trustworthy checkpoint
    candidates = ranked([t for t in trials if t.status != "ERROR"], spec.tune.metric,
                        spec.tune.mode)
    if not candidates:
        raise TrainingError(f"tune: no trial finished with {spec.tune.metric} "
                            f"({sum(t.status == 'ERROR' for t in trials)} of {len(trials)} "
                            "failed); see the trial errors above")
    best = candidates[0]
    best_result = results[best.trial_id]
    best_spec = trial_spec(base, best.config)
    with _checkpoint_of(best_result).as_directory() as d:
        output = load_output(Path(d), best_spec.model, n_in, loop.n_out)
    return SearchOutcome(spec=best_spec, best=best, output=output, trials=trials,
                         path=search_path(storage, name), resumed=resumed)


def _trial_id(result) -> str:
    return Path(result.path).name


def _record(result) -> TrialRecord:
    history: dict[int, dict] = {}
    frame = result.metrics_dataframe
    if frame is not None and "epoch" in frame:
        for row in frame.to_dict("records"):
            if row.get("epoch") == row.get("epoch"):  # not NaN
                history[int(row["epoch"])] = {"epoch": int(row["epoch"]), **{
                    k: float(row[k]) for k in LOGGED_METRICS if k in row and row[k] == row[k]}}
    status = "ERROR" if result.error else "TERMINATED"
    return TrialRecord(trial_id=_trial_id(result), config=dict(result.config), status=status,
                       history=[history[e] for e in sorted(history)],
                       seconds=float((result.metrics or {}).get("time_total_s") or 0.0))


def _checkpoint_of(result):
    """The trial's checkpoint: Tune's own (in-process trial) or the path its TorchTrainer
    reported (multi-worker trial)."""
    import ray.train
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

    if result.checkpoint is not None:
        return result.checkpoint
    path = (result.metrics or {}).get(CHECKPOINT_PATH_KEY)
    if not path:
        raise TrainingError(f"tune: the best trial {_trial_id(result)} left no checkpoint")
    return ray.train.Checkpoint(path)


# --- reporting (driver side) ------------------------------------------------------------------


def ranked(trials: list[TrialRecord], metric: str, mode: str) -> list[TrialRecord]:
    scored = [t for t in trials if t.last(metric) is not None
              and t.last(metric) == t.last(metric)]  # NaN never ranks
    return sorted(scored, key=lambda t: t.last(metric), reverse=mode == "max")


def top_table(trials: list[TrialRecord], metric: str, mode: str, n: int = 5) -> list[str]:
    """The best `n` trials as aligned text lines (the CLI prints them under the tune stage)."""
    rows = [("rank", "trial", metric, "epochs", "config")]
    for i, t in enumerate(ranked(trials, metric, mode)[:n], 1):
        config = ", ".join(f"{k}={_short(v)}" for k, v in t.config.items())
        rows.append((str(i), t.trial_id, f"{t.last(metric):.4f}", str(len(t.history)), config))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
            for r in rows]


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


def save_plot(trials: list[TrialRecord], metric: str, mode: str, best_id: str,
              path: Path) -> Path:
    """Two panels: the final metric of each trial (best highlighted), and every learning
    curve of the metric per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    order = ranked(trials, metric, mode)
    left.bar(range(len(order)), [t.last(metric) for t in order],
             color=["tab:orange" if t.trial_id == best_id else "tab:blue" for t in order])
    left.set_xticks(range(len(order)), [t.trial_id[-5:] for t in order], rotation=60,
                    fontsize=7)
    left.set(title=f"final {metric} per trial (best in orange)", ylabel=metric)
    for t in trials:
        points = [(row["epoch"], row[metric]) for row in t.history if metric in row]
        if points:
            xs, ys = zip(*points, strict=True)
            best = t.trial_id == best_id
            right.plot(xs, ys, color="tab:orange" if best else "tab:blue",
                       alpha=1.0 if best else 0.35, linewidth=2.5 if best else 1)
    right.set(title="learning curves", xlabel="epoch", ylabel=metric)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
