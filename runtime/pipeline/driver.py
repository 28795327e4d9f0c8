"""Runs the stages of one spec in order and records the run in MLflow.

    mlrt run jobs/digits.yaml          # the CLI calls run_job(spec)

Stages: ray -> data -> preprocess -> train (or tune) -> evaluate -> register (the last two in
runtime.pipeline.decide). Each prints one line with its elapsed time. With a `tune:` section
the tune stage replaces train: the best trial's checkpoint is evaluated and registered, and
`resume=RUN_ID` continues a search whose driver died. A failed gate still registers the
version (tagged `mlrt.gate=failed`, for inspection) but never moves the alias, and raises
GateFailed (exit 1). Under `register.approval: manual` a passing gate moves @candidate, not
the serving alias.
"""

from __future__ import annotations

import importlib
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from runtime.cluster.connect import init_ray
from runtime.data.fs import check_storage
from runtime.data.table import Table, load_table
from runtime.errors import DataCheckError, GateFailed, InputError
from runtime.features.apply import output_columns
from runtime.features.fit import fit_state
from runtime.inference.predictor import Predictor
from runtime.pipeline import decide, record
from runtime.registry import tracking
from runtime.registry.model_dir import (
    PREDICTION_PROFILE_FILE,
    PROFILE_FILE,
    Architecture,
    ModelMeta,
    save_model_dir,
    write_json_atomic,
)
from runtime.spec import JobSpec
from runtime.training.evaluate import Verdict
from runtime.training.models import framework_of, spec_framework
from runtime.training.train import (
    TrainOutput,
    train_sklearn,
    train_torch,
    train_torch_in_task,
    training_arrays,
    training_datasets,
)

# Below this size (float32 model inputs of train + validation) each training worker keeps its
# shard in memory after the first epoch: re-streaming a tiny dataset through Ray Data every epoch
# costs ~1 s of coordination per epoch and buys nothing. Larger data streams every epoch.
CACHE_SHARDS_BELOW_BYTES = 256 * 1024**2


@dataclass
class RunSummary:
    run_id: str
    model_name: str
    version: str
    metrics: dict[str, float]
    verdict: Verdict
    alias: str
    alias_moved_from: str | None
    alias_moved: bool
    tracking_uri: str
    slices: list = field(default_factory=list)  # runtime.training.evaluate.Slice
    approval: str = "auto"
    timings: dict[str, float] = field(default_factory=dict)
    restarts: int = 0
    best_trial: str | None = None  # tuned runs: the trial whose checkpoint was registered
    trials: int = 0


class StageClock:
    def __init__(self, echo: Callable[[str], None]):
        self.echo = echo
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.echo(f"[{name}] ...")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = time.perf_counter() - start
            self.echo(f"[{name}] done in {self.timings[name]:.1f}s")


def run_job(spec: JobSpec, address: str | None = None,
            echo: Callable[[str], None] = print, resume: str | None = None,
            actor: str | None = None, retrain: decide.Retrain | None = None) -> RunSummary:
    """`retrain` (the watcher's): extra rows appended to the source, tags on the new version,
    and the alias a passing gate moves instead of the serving one (@challenger for a canary)."""
    if resume and spec.tune is None:
        raise InputError(f"--resume {resume}: resuming continues a search; the spec has no "
                         "tune section")
    # an unreachable or misspelt s3:// storage fails now (exit 2), not at the first checkpoint
    check_storage(spec.storage)
    tracking.tracking_uri(spec.storage)  # remote storage needs a tracking server: say so now
    clock = StageClock(echo)
    # Opening the MLflow store (import, sqlite schema, experiment) takes ~3 s and needs no Ray:
    # do it while Ray starts. ray.init mostly waits on its subprocesses, so the two overlap.
    with ThreadPoolExecutor(1, thread_name_prefix="mlrt-mlflow") as pool:
        store = pool.submit(_open_tracking, spec)
        with clock.stage("ray"):
            echo(f"  {init_ray(address)}")
        uri, experiment = store.result()
    with _start_run(spec, experiment, resume, echo) as run:
        if not resume:
            record.log_spec(spec)
        with clock.stage("data"):
            table = _load_data(spec, retrain.extra_rows if retrain else None)
            echo(f"  {table.rows} rows, {len(table.features)} features, fingerprint "
                 f"{table.fingerprint}; split "
                 f"{', '.join(f'{k}={v}' for k, v in table.split_rows.items())}")
            if table.checks.dropped_rows:
                echo(f"  dropped {table.checks.dropped_rows} rows failing "
                     f"{', '.join(k for k, v in table.checks.failing_rows.items() if v)}")
        with clock.stage("preprocess"):
            state = fit_state(list(spec.data.preprocess), table.rows_of("train"),
                              table.feature_types)
            profile = table.profile
            n_in = len(output_columns(state))
            echo(f"  {len(state.steps)} steps fitted on the training split -> {n_in} model "
                 "inputs; data profile recorded")
        if resume:
            _same_data(run.data.tags.get("mlrt.data_fingerprint"), table, resume)
        record.log_data(table, state, profile)
        search = None
        if spec.tune is not None:
            with clock.stage("tune"):
                search = _tune(spec, table, state, n_in, run.info.run_id, experiment,
                               resume is not None, echo)
            spec, output = search.spec, search.output  # evaluate/register the best trial
        else:
            with clock.stage("train"):
                output = _train(spec, table, state, n_in, run.info.run_id, echo)
        for row in output.history:
            tracking.log_metrics({k: v for k, v in row.items() if k != "epoch"},
                                 step=int(row["epoch"]))
        with clock.stage("evaluate"):
            model_dir = Path(tempfile.mkdtemp(prefix="mlrt-model-"))
            meta = _model_meta(spec, table, n_in, output)
            save_model_dir(model_dir, meta, state, output.model)
            write_json_atomic(model_dir / PROFILE_FILE, profile)
            predictor = Predictor.load(model_dir)  # evaluate exactly what gets registered
            result = decide.evaluate(spec, table, predictor)
            write_json_atomic(model_dir / PREDICTION_PROFILE_FILE, result.prediction_profile)
            verdict = result.verdict
            echo("  " + ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items()))
            for s in result.slices:
                echo(f"  slice {s.label} ({s.rows} rows{'' if s.gated else ', not gated'}): "
                     + ", ".join(f"{k}={v:.4f}" for k, v in s.metrics.items()))
            echo(f"  gate {'passed' if verdict.passed else 'FAILED'}: {verdict.reason}")
        with clock.stage("register"):
            reg = decide.register(spec, table, model_dir, predictor, meta, result,
                                  run.info.run_id, actor, retrain)
            echo(f"  {spec.name} v{reg.version}"
                 + (f" -> @{reg.alias}" if verdict.passed else " (alias not moved)"))
            for warning in reg.warnings:
                echo(f"  warning: {warning}")
            if verdict.passed and spec.register.approval == "manual":
                echo(f"  waiting for approval: mlrt models approve {spec.name} {reg.version} "
                     f"--reason ...  (moves @{spec.register.alias})")
        summary = RunSummary(
            run_id=run.info.run_id, model_name=spec.name, version=reg.version,
            metrics=result.metrics, verdict=verdict, alias=reg.alias,
            alias_moved_from=reg.moved_from, alias_moved=verdict.passed, tracking_uri=uri,
            timings=clock.timings, restarts=output.restarts,
            best_trial=search.best.trial_id if search else None,
            trials=len(search.trials) if search else 0, slices=result.slices,
            approval=spec.register.approval,
        )
        tracking.log_metrics({f"stage_seconds_{k}": v for k, v in clock.timings.items()})
    if not verdict.passed:
        raise GateFailed(f"gate failed: {verdict.reason}; {spec.name} v{summary.version} "
                         f"registered, alias '{summary.alias}' left where it was",
                         summary=summary)
    return summary


def _open_tracking(spec: JobSpec) -> tuple[str, str]:
    uri = tracking.use_store(spec.storage)
    return uri, tracking.experiment_id(spec.name, spec.storage)


@contextmanager
def _start_run(spec: JobSpec, experiment: str, resume: str | None,
               echo: Callable[[str], None] = print):
    """A new MLflow run, or (resume) the run of a search whose driver died. Runs of this
    experiment whose driver was killed before it could end them are marked KILLED first."""
    from mlflow.exceptions import MlflowException

    stale = tracking.end_stale_runs(experiment)
    if stale:
        echo(f"  marked {len(stale)} earlier run(s) KILLED: their driver process is gone "
             f"({', '.join(r[:12] for r in stale)})")
    if not resume:
        with tracking.start_run(experiment) as run:
            yield run
        return
    try:
        previous = tracking.client().get_run(resume)
    except MlflowException as e:
        raise InputError(f"--resume {resume}: no such run in {spec.storage}") from e
    if previous.info.lifecycle_stage == "deleted":
        raise InputError(f"--resume {resume}: that run was deleted; start a new run")
    if previous.info.experiment_id != experiment:
        raise InputError(f"--resume {resume}: that run belongs to another experiment, not "
                         f"'{spec.name}'")
    if previous.info.status == "FINISHED":
        raise InputError(f"--resume {resume}: that run already finished; nothing to resume")
    started = previous.data.tags.get("mlrt.spec_hash")
    if started != spec.spec_hash():
        raise InputError(f"--resume {resume}: the run was started from another spec (hash "
                         f"{started}, this one {spec.spec_hash()}); resume with the same "
                         "spec and --set values")
    with tracking.start_run(run_id=resume) as run:
        yield run


def _same_data(before: str | None, table: Table, run_id: str) -> None:
    """Trials restored by --resume were trained on the data the search started with."""
    if before and before != table.fingerprint:
        raise InputError(f"--resume {run_id}: the data changed since the search started "
                         f"(fingerprint {before}, now {table.fingerprint}); start a new run")


def _storage_path(spec: JobSpec) -> str:
    return spec.storage if "://" in spec.storage else str(Path(spec.storage).absolute())


def _model_bytes(table: Table, n_in: int) -> int:
    """Size of the model-ready train + validation data (float32 inputs)."""
    return (table.split_rows["train"] + table.split_rows["validation"]) * n_in * 4


def _cache_shards(table: Table, n_in: int) -> bool:
    return _model_bytes(table, n_in) <= CACHE_SHARDS_BELOW_BYTES


def _tune(spec: JobSpec, table: Table, state: dict, n_in: int, run_id: str, experiment: str,
          resume: bool, echo: Callable[[str], None]):
    """The search; its trials become child runs, its summary a table, a plot and the best
    spec on the job's run."""
    from runtime.training import tune

    name = f"{spec.name}-{run_id}"
    storage = _storage_path(spec)
    echo(f"  search stored at {tune.search_path(storage, name)}; if this driver dies, continue "
         f"it with: mlrt run SPEC --resume {run_id}")
    search = tune.run_search(spec, training_datasets(table, state), n_in, table.classes,
                             _cache_shards(table, n_in), storage, name, resume=resume)
    metric, mode = spec.tune.metric, spec.tune.mode
    if search.resumed:
        echo("  resumed the stored search: finished trials kept, unfinished ones continued")
    tracking.log_trials(search.trials, run_id, experiment)
    for line in tune.top_table(search.trials, metric, mode):
        echo("  " + line)
    echo(f"  best: trial {search.best.trial_id} of {len(search.trials)}, {metric}="
         f"{search.best.last(metric):.4f}; its checkpoint is evaluated and registered")
    with tempfile.TemporaryDirectory() as tmp:
        plot = tune.save_plot(search.trials, metric, mode, search.best.trial_id,
                              Path(tmp) / "tune_search.png")
        tracking.log_file(plot, "tune")
    best = search.spec.model_dump(mode="json", exclude={"tune"})
    tracking.log_text(yaml.safe_dump(best, sort_keys=False), "best_spec.yaml")
    tracking.log_params({f"tune.best.{k}": json.dumps(v) if not isinstance(v, str) else v
                         for k, v in search.best.config.items()})
    tracking.log_params({"tune.metric": metric, "tune.mode": mode,
                         "tune.scheduler": spec.tune.scheduler.kind,
                         "tune.search": spec.tune.search.kind, "tune.samples": spec.tune.samples})
    tracking.set_tags({"mlrt.tune.best_trial": search.best.trial_id,
                     "mlrt.tune.path": search.path, "mlrt.tune.trials": str(len(search.trials))})
    return search


def _train(spec: JobSpec, table: Table, state: dict, n_in: int, run_id: str,
           echo: Callable[[str], None] = print) -> TrainOutput:
    n_out = len(table.classes) if table.classes is not None else 1
    if spec_framework(spec.model, n_in, n_out) != "torch":
        return train_sklearn(spec.model, table, state, n_out, spec.train.cpus_per_worker)
    # the driver needs torch for the trained model and scikit-learn's metrics to evaluate it:
    # import them (~2 s) while the workers train
    threading.Thread(target=_import_all, args=(("torch", "sklearn.metrics"),),
                     daemon=True).start()
    where = (f"{_storage_path(spec)}/ray_train", f"{spec.name}-{run_id}")
    size, below = _model_bytes(table, n_in), spec.train.single_process_below_mb * 1024**2
    if size < below:
        workers = spec.train.workers
        echo(f"  {size / 1024**2:.1f} MiB of model-ready data: one process trains"
             + (f", not a worker group of {workers} (below train.single_process_below_mb="
                f"{spec.train.single_process_below_mb:g}; 0 uses the group)" if workers > 1
                else ""))
        return train_torch_in_task(spec.train, spec.model, training_arrays(table, state), n_in,
                                   table.classes, *where)
    return train_torch(spec.train, spec.model, training_datasets(table, state), n_in,
                       table.classes, *where,
                       cache_shards=_cache_shards(table, n_in))


def _import_all(modules: tuple[str, ...]) -> None:
    for name in modules:
        importlib.import_module(name)


def _model_meta(spec: JobSpec, table: Table, n_in: int, output: TrainOutput) -> ModelMeta:
    framework = framework_of(output.model)  # what was trained, not a second build
    architecture = None
    if framework == "torch":
        architecture = Architecture(spec.model.model_dump(mode="json"), n_in,
                                    len(table.classes) if table.classes else 1)
    return ModelMeta(framework=framework, task=spec.task, name=spec.name, classes=table.classes,
                     features=tuple(table.features), target=table.target,
                     architecture=architecture)


def _load_data(spec: JobSpec, extra_rows=None) -> Table:
    """The data stage; when checks fail, their report and a sample of the failing rows go to
    the run's artifacts (`data_checks/`) before the run stops."""
    try:
        return load_table(spec.data, spec.task, spec.evaluate.slices, extra_rows)
    except DataCheckError as e:
        if e.report is not None:
            tracking.log_dict(e.report.as_dict(), "data_checks/report.json")
            if e.report.sample is not None:
                tracking.log_text(e.report.sample.to_csv(index=False),
                                  "data_checks/failing_rows_sample.csv")
        tracking.set_tags({"mlrt.failed_stage": "data"})
        raise
