"""Runs the stages of one spec in order and records the run in MLflow.

    mlrt run jobs/digits.yaml          # the CLI calls run_job(spec)

Stages: ray -> data -> preprocess -> train (or tune) -> evaluate -> register. Each prints one
line with its elapsed time. With a `tune:` section the tune stage replaces train: the best
trial's checkpoint is evaluated and registered, and `resume=RUN_ID` continues a search whose
driver died. A failed gate still registers the version (tagged `mlrt.gate=failed`, for
inspection) but never moves the alias, and raises GateFailed (exit 1).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from runtime import registry
from runtime.cluster import init_ray
from runtime.data import Table, load_table
from runtime.errors import DataCheckError, GateFailed, InputError
from runtime.evaluate import Verdict, check_gate, compute_metrics
from runtime.inference import Predictor, save_model_dir, write_json_atomic
from runtime.models import framework_of, spec_framework
from runtime.preprocess import fit_state
from runtime.scan import to_frame
from runtime.spec import JobSpec
from runtime.train import TrainOutput, train_sklearn, train_torch, training_datasets
from runtime.transform import output_columns

PROFILE_FILE = "profile.json"
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
            echo: Callable[[str], None] = print, resume: str | None = None) -> RunSummary:
    import mlflow

    if resume and spec.tune is None:
        raise InputError(f"--resume {resume}: resuming continues a search; the spec has no "
                         "tune section")
    clock = StageClock(echo)
    # Opening the MLflow store (import, sqlite schema, experiment) takes ~3 s and needs no Ray:
    # do it while Ray starts. ray.init mostly waits on its subprocesses, so the two overlap.
    with ThreadPoolExecutor(1, thread_name_prefix="mlrt-mlflow") as pool:
        tracking = pool.submit(_open_tracking, spec)
        with clock.stage("ray"):
            echo(f"  {init_ray(address)}")
        uri, experiment = tracking.result()
    with _start_run(spec, experiment, resume) as run:
        if not resume:
            _log_spec(spec)
        with clock.stage("data"):
            table = _load_data(spec)
            echo(f"  {table.rows} rows, {len(table.features)} features, fingerprint "
                 f"{table.fingerprint}; split "
                 f"{', '.join(f'{k}={v}' for k, v in table.split_rows.items())}")
            if table.checks.dropped_rows:
                echo(f"  dropped {table.checks.dropped_rows} rows failing "
                     f"{', '.join(k for k, v in table.checks.failing_rows.items() if v)}")
        with clock.stage("preprocess"):
            state = fit_state(list(spec.data.preprocess), table.dataset("train"),
                              table.feature_types)
            profile = table.profile
            n_in = len(output_columns(state))
            echo(f"  {len(state['steps'])} steps fitted on the training split -> {n_in} model "
                 "inputs; data profile recorded")
        if resume:
            _same_data(run.data.tags.get("mlrt.data_fingerprint"), table, resume)
        _log_data(table, state, profile)
        search = None
        if spec.tune is not None:
            with clock.stage("tune"):
                search = _tune(spec, table, state, n_in, run.info.run_id, experiment,
                               resume is not None, echo)
            spec, output = search.spec, search.output  # evaluate/register the best trial
        else:
            with clock.stage("train"):
                output = _train(spec, table, state, n_in, run.info.run_id)
        for row in output.history:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"},
                               step=int(row["epoch"]))
        with clock.stage("evaluate"):
            model_dir = Path(tempfile.mkdtemp(prefix="mlrt-model-"))
            meta = _model_meta(spec, table, n_in, output)
            save_model_dir(model_dir, meta, state, output.model)
            write_json_atomic(model_dir / PROFILE_FILE, profile)
            predictor = Predictor.load(model_dir)  # evaluate exactly what gets registered
            metrics, verdict = _evaluate(spec, table, predictor)
            echo("  " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            echo(f"  gate {'passed' if verdict.passed else 'FAILED'}: {verdict.reason}")
        with clock.stage("register"):
            version, moved_from = _register(spec, table, model_dir, predictor, meta, metrics,
                                            verdict)
            echo(f"  {spec.name} v{version}"
                 + (f" -> @{spec.register.alias}" if verdict.passed else " (alias not moved)"))
        summary = RunSummary(
            run_id=run.info.run_id, model_name=spec.name, version=version, metrics=metrics,
            verdict=verdict, alias=spec.register.alias, alias_moved_from=moved_from,
            alias_moved=verdict.passed, tracking_uri=uri, timings=clock.timings,
            restarts=output.restarts, best_trial=search.best.trial_id if search else None,
            trials=len(search.trials) if search else 0,
        )
        mlflow.log_metrics({f"stage_seconds_{k}": v for k, v in clock.timings.items()})
    if not verdict.passed:
        raise GateFailed(f"gate failed: {verdict.reason}; {spec.name} v{version} registered, "
                         f"alias '{spec.register.alias}' left where it was", summary=summary)
    return summary


def _open_tracking(spec: JobSpec) -> tuple[str, str]:
    uri = registry.use_store(spec.storage)
    return uri, registry.experiment_id(spec.name, spec.storage)


@contextmanager
def _start_run(spec: JobSpec, experiment: str, resume: str | None):
    """A new MLflow run, or (resume) the run of a search whose driver died."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if not resume:
        with mlflow.start_run(experiment_id=experiment) as run:
            yield run
        return
    try:
        previous = mlflow.MlflowClient().get_run(resume)
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
    with mlflow.start_run(run_id=resume) as run:
        yield run


def _same_data(before: str | None, table: Table, run_id: str) -> None:
    """Trials restored by --resume were trained on the data the search started with."""
    if before and before != table.fingerprint:
        raise InputError(f"--resume {run_id}: the data changed since the search started "
                         f"(fingerprint {before}, now {table.fingerprint}); start a new run")


def _storage_path(spec: JobSpec) -> str:
    return spec.storage if "://" in spec.storage else str(Path(spec.storage).absolute())


def _cache_shards(table: Table, n_in: int) -> bool:
    rows = table.split_rows["train"] + table.split_rows["validation"]
    return rows * n_in * 4 <= CACHE_SHARDS_BELOW_BYTES


def _tune(spec: JobSpec, table: Table, state: dict, n_in: int, run_id: str, experiment: str,
          resume: bool, echo: Callable[[str], None]):
    """The search; its trials become child runs, its summary a table, a plot and the best
    spec on the job's run."""
    import mlflow

    from runtime import tune

    name = f"{spec.name}-{run_id}"
    storage = _storage_path(spec)
    echo(f"  search stored at {tune.search_path(storage, name)}; if this driver dies, continue "
         f"it with: mlrt run SPEC --resume {run_id}")
    search = tune.run_search(spec, training_datasets(table, state), n_in, table.classes,
                             _cache_shards(table, n_in), storage, name, resume=resume)
    metric, mode = spec.tune.metric, spec.tune.mode
    if search.resumed:
        echo("  resumed the stored search: finished trials kept, unfinished ones continued")
    tune.log_trials(search.trials, run_id, experiment)
    for line in tune.top_table(search.trials, metric, mode):
        echo("  " + line)
    echo(f"  best: trial {search.best.trial_id} of {len(search.trials)}, {metric}="
         f"{search.best.last(metric):.4f}; its checkpoint is evaluated and registered")
    with tempfile.TemporaryDirectory() as tmp:
        plot = tune.save_plot(search.trials, metric, mode, search.best.trial_id,
                              Path(tmp) / "tune_search.png")
        mlflow.log_artifact(str(plot), "tune")
    best = search.spec.model_dump(mode="json", exclude={"tune"})
    mlflow.log_text(yaml.safe_dump(best, sort_keys=False), "best_spec.yaml")
    mlflow.log_params({f"tune.best.{k}": json.dumps(v) if not isinstance(v, str) else v
                       for k, v in search.best.config.items()})
    mlflow.log_params({"tune.metric": metric, "tune.mode": mode,
                       "tune.scheduler": spec.tune.scheduler.kind,
                       "tune.search": spec.tune.search.kind, "tune.samples": spec.tune.samples})
    mlflow.set_tags({"mlrt.tune.best_trial": search.best.trial_id,
                     "mlrt.tune.path": search.path, "mlrt.tune.trials": str(len(search.trials))})
    return search


def _train(spec: JobSpec, table: Table, state: dict, n_in: int, run_id: str) -> TrainOutput:
    n_out = len(table.classes) if table.classes is not None else 1
    if spec_framework(spec.model, n_in, n_out) == "torch":
        datasets = training_datasets(table, state)
        return train_torch(spec.train, spec.model, datasets, n_in, table.classes,
                           f"{_storage_path(spec)}/ray_train", f"{spec.name}-{run_id}",
                           cache_shards=_cache_shards(table, n_in))
    return train_sklearn(spec.model, table, state, n_out, spec.train.cpus_per_worker)


def _evaluate(spec: JobSpec, table: Table, predictor: Predictor) -> tuple[dict, Verdict]:
    import mlflow

    y_true, predictions, proba = _predict_test_split(table, predictor)
    metrics = compute_metrics(spec.metrics, y_true, predictions, proba, table.classes)
    mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
    champion = registry.version_by_alias(spec.name, spec.register.alias)
    verdict = check_gate(spec.evaluate.gate, metrics, champion.metrics if champion else None,
                         champion.version if champion else None)
    mlflow.set_tags({"mlrt.gate": "passed" if verdict.passed else "failed",
                     "mlrt.gate_reason": verdict.reason})
    return metrics, verdict


def _register(spec: JobSpec, table: Table, model_dir: Path, predictor: Predictor, meta: dict,
              metrics: dict, verdict: Verdict) -> tuple[str, str | None]:
    """A new model version (always, tagged with the verdict); the alias moves only on a pass.
    Returns (version, the version the alias held before or None)."""
    version = registry.log_model_version(
        spec.name, model_dir, _signature(table, predictor), _requirements(meta),
        tags={
            "mlrt.metrics": json.dumps(metrics),
            "mlrt.gate": "passed" if verdict.passed else "failed",
            "mlrt.gate_reason": verdict.reason,
            "mlrt.spec_hash": spec.spec_hash(),
            "mlrt.data_fingerprint": table.fingerprint,
            "mlrt.git_commit": _git_commit() or "",
            "mlrt.task": spec.task,
        },
    )
    moved_from = None
    if verdict.passed:
        moved_from = registry.move_alias(spec.name, spec.register.alias, version)
    return version, moved_from


EVAL_BATCH_ROWS = 65_536


def _predict_test_split(table: Table, predictor: Predictor):
    """Predict the test split batch by batch: the driver holds labels and predictions, not the
    rows."""
    if table.frames is not None:
        batches = [table.frames["test"]]
    else:
        batches = (to_frame(b) for b in table.dataset("test").iter_batches(
            batch_size=EVAL_BATCH_ROWS, batch_format="pyarrow"))
    y_true, predicted, probabilities = [], [], []
    for batch in batches:
        labels, proba = predictor.predict(batch[table.features])
        y_true.append(batch[table.target].to_numpy())
        predicted.append(labels)
        if proba is not None:
            probabilities.append(proba)
    if not y_true:
        raise DataCheckError("data.split.test: the test split is empty")
    return (np.concatenate(y_true), np.concatenate(predicted),
            np.concatenate(probabilities) if probabilities else None)


def _test_rows(table: Table, n: int) -> pd.DataFrame:
    if table.frames is not None:
        return table.frames["test"].head(n)
    return pd.DataFrame(table.dataset("test").take(n))


def _model_meta(spec: JobSpec, table: Table, n_in: int, output: TrainOutput) -> dict:
    framework = framework_of(output.model)  # what was trained, not a second build
    meta = {
        "framework": framework,
        "task": spec.task,
        "name": spec.name,
        "classes": table.classes,
        "features": table.features,
        "target": table.target,
    }
    if framework == "torch":
        meta["architecture"] = {"spec": spec.model.model_dump(mode="json"), "n_in": n_in,
                                "n_out": len(table.classes) if table.classes else 1}
    return meta


def _log_spec(spec: JobSpec) -> None:
    import mlflow

    mlflow.log_params(_flatten(spec.model_dump(
        mode="json", exclude={"serve", "tune", "runtime", "cluster"})))
    mlflow.set_tags({"mlrt.spec_hash": spec.spec_hash(), "mlrt.git_commit": _git_commit() or ""})
    mlflow.log_text(yaml.safe_dump(recorded_spec(spec), sort_keys=False), "spec.yaml")


def recorded_spec(spec: JobSpec) -> dict:
    """The spec as the run records it: `runtime.env_vars` may carry credentials, so only their
    names are kept."""
    recorded = spec.model_dump(mode="json")
    if recorded.get("runtime"):
        recorded["runtime"]["env_vars"] = dict.fromkeys(recorded["runtime"]["env_vars"], "***")
    return recorded


def _load_data(spec: JobSpec) -> Table:
    """The data stage; when checks fail, their report and a sample of the failing rows go to
    the run's artifacts (`data_checks/`) before the run stops."""
    import mlflow

    try:
        return load_table(spec.data, spec.task)
    except DataCheckError as e:
        if e.report is not None:
            mlflow.log_dict(e.report.as_dict(), "data_checks/report.json")
            if e.report.sample is not None:
                mlflow.log_text(e.report.sample.to_csv(index=False),
                                "data_checks/failing_rows_sample.csv")
        mlflow.set_tag("mlrt.failed_stage", "data")
        raise


def _log_data(table: Table, state: dict, profile: dict) -> None:
    import mlflow

    mlflow.set_tags({"mlrt.data_fingerprint": table.fingerprint, "mlrt.rows": str(table.rows)})
    mlflow.log_dict(state, "preprocess.json")
    mlflow.log_dict(profile, PROFILE_FILE)
    mlflow.log_dict(table.checks.as_dict(), "data_checks/report.json")
    if table.checks.sample is not None:
        mlflow.log_text(table.checks.sample.to_csv(index=False),
                        "data_checks/dropped_rows_sample.csv")


def _flatten(data: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = json.dumps(value) if not isinstance(value, str) else value
    return flat


def _signature(table: Table, predictor: Predictor):
    from mlflow.models import infer_signature

    sample = _test_rows(table, 5)[table.features]
    with warnings.catch_warnings():  # the integer-columns hint: inputs are validated by mlrt
        warnings.simplefilter("ignore", UserWarning)
        return infer_signature(sample, predictor.predict_frame(sample))


def _requirements(meta: dict) -> list[str]:
    names = ["mlflow", "pandas", "numpy", "pyyaml", "pydantic"]
    names += ["torch", "safetensors"] if meta["framework"] == "torch" else ["scikit-learn", "skops"]
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
