"""MLflow tracking and registry writes: the one module that writes to MLflow.

Every stage that records something (the driver's params, metrics, tags and artifacts, the
search's trial runs, a new model version, an alias move) calls a function here, so there is one
place to see what mlrt writes, and one place to add an audit hook or a retry.

Default store: sqlite under the spec's `storage` (`.mlrt/mlflow.db`, artifacts in
`.mlrt/mlartifacts`); `MLFLOW_TRACKING_URI` overrides it. Browse it with
`mlflow ui --backend-store-uri sqlite:///.mlrt/mlflow.db`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.errors import RegistryError

if TYPE_CHECKING:
    from runtime.training.tune import TrialRecord

PYFUNC_CODE = str(Path(__file__).with_name("pyfunc_model.py"))
SLICES_TAG = "mlrt.slices"  # a version's slice metrics (JSON), or where its run holds them
_TAG_LIMIT = 5000  # MLflow's longest tag value
_URI_VARS = frozenset({"MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"})
DRIVER_TAG = "mlrt.driver"  # host:pid-namespace:pid of the process running the run
# MLflow prints these to stderr for every version it registers; mlrt prints its own line.
_REGISTRY_NOTICES = ("Successfully registered model", "Created version ")


# --- the store ---------------------------------------------------------------------------------


def tracking_uri(storage: str) -> str:
    """The MLflow tracking URI for a spec's storage (MLFLOW_TRACKING_URI wins)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if "://" in storage:
        raise RegistryError(f"storage: {storage} is remote; set MLFLOW_TRACKING_URI to an MLflow "
                            "server that can reach it")
    return f"sqlite:///{Path(storage).absolute() / 'mlflow.db'}"


def use_store(storage: str) -> str:
    import mlflow

    user_set = {k for k in _URI_VARS if k in os.environ}
    # with a tracking server MLflow prints "View run ... at: URL" for every run it ends
    # (trials too); mlrt's summary names the server once
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    uri = tracking_uri(storage)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # MLflow also exports the URIs to the environment; left there, they would read as the
    # user's choice on the next call (and the experiment's artifacts would go to ./mlruns).
    for key in _URI_VARS - user_set:
        os.environ.pop(key, None)
    return uri


def ui_command(uri: str) -> str:
    """How to browse the runs: a tracking server's own URL (it is the UI), else `mlflow ui`."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri.rstrip('/')} (the tracking server's UI)"
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        with contextlib.suppress(ValueError):
            path = path.relative_to(Path.cwd())
        uri = f"sqlite:///{path}"
    return f"mlflow ui --backend-store-uri {uri}"


def experiment_id(name: str, storage: str) -> str:
    """The experiment named `name`, created (artifacts under storage) when it is new."""
    import mlflow

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        location = (Path(storage).absolute() / "mlartifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def client():
    from mlflow import MlflowClient

    return MlflowClient()


# --- runs --------------------------------------------------------------------------------------


@contextlib.contextmanager
def start_run(experiment: str | None = None, run_id: str | None = None) -> Iterator[Any]:
    """A new run in `experiment`, or the existing run `run_id` continued (a resumed search),
    tagged with the driver process that runs it (see end_stale_runs)."""
    import mlflow

    with mlflow.start_run(experiment_id=experiment, run_id=run_id) as run:
        mlflow.set_tag(DRIVER_TAG, driver_id())
        yield run


def driver_id(pid: int | None = None) -> str:
    """`host:pidns:pid`. The host name alone does not say which process table a pid is in:
    containers started with --network=host carry the host's name, and each has its own pid
    namespace (so pid 7 there and pid 7 here are different processes)."""
    return f"{socket.gethostname()}:{_pid_namespace()}:{pid or os.getpid()}"


def _pid_namespace() -> str:
    """This process's pid namespace (its inode, e.g. 4026531836), or "?" where /proc lacks it."""
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:
        return "?"


def end_stale_runs(experiment: str) -> list[str]:
    """Mark KILLED the RUNNING runs of `experiment` whose driver provably died: started on
    this host, in this pid namespace, by a process that no longer exists (or whose pid now
    belongs to a younger process). A killed `mlrt run` cannot end its own run; runs of other
    hosts, of containers (another pid namespace) and with an older or no tag are left alone.
    Returns the ids of the runs it ended."""
    mlflow_client = client()
    here = driver_id(0).rsplit(":", 1)[0]  # host:pidns
    ended = []
    for run in mlflow_client.search_runs([experiment], "attributes.status = 'RUNNING'",
                                         max_results=1000):
        where, _, pid = run.data.tags.get(DRIVER_TAG, "").rpartition(":")
        if where != here or not pid.isdigit() or here.endswith(":?"):
            continue
        if _process_alive_since(int(pid), run.info.start_time / 1000):
            continue
        mlflow_client.set_tag(run.info.run_id, "mlrt.ended_by",
                              f"a later run: driver pid {pid} on {here} is gone")
        mlflow_client.set_terminated(run.info.run_id, "KILLED")
        ended.append(run.info.run_id)
    return ended


def _process_alive_since(pid: int, started: float) -> bool:
    """Whether process `pid` exists and was started before `started` (epoch seconds); a pid
    reused by a process started later is not the run's driver."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    with contextlib.suppress(OSError):  # Linux: /proc/PID is made when the process starts
        return os.stat(f"/proc/{pid}").st_ctime <= started + 1.0
    return True


def log_params(params: dict[str, Any]) -> None:
    import mlflow

    mlflow.log_params(params)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics(metrics, step=step)


def set_tags(tags: dict[str, str]) -> None:
    import mlflow

    mlflow.set_tags(tags)


def log_dict(data: Any, path: str) -> None:
    import mlflow

    mlflow.log_dict(data, path)


def log_text(text: str, path: str) -> None:
    import mlflow

    mlflow.log_text(text, path)


def log_text_to_run(run_id: str, text: str, path: str) -> None:
    """An artifact of a run that is not the active one (a version's card, refreshed)."""
    client().log_text(run_id, text, path)


def slices_tag(slices: list[dict]) -> str:
    """The `mlrt.slices` value: the slices as JSON when they fit in a tag, else a pointer to
    the run's slices.json (log_dict it too)."""
    text = json.dumps(slices, separators=(",", ":"))
    return text if len(text) <= _TAG_LIMIT else json.dumps({"artifact": "slices.json"})


def log_file(path: str | Path, folder: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), folder)


def log_trials(trials: list[TrialRecord], parent_run_id: str, experiment: str) -> int:
    """One MLflow child run per trial (params = the trial's values, metrics per epoch). Trials
    already logged (a resumed search) are skipped. Returns how many runs were created."""
    from mlflow.entities import Metric, Param, RunTag

    mlflow_client = client()
    existing = mlflow_client.search_runs([experiment],
                                         f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                         max_results=10_000)
    logged = {r.data.tags.get("mlrt.trial_id") for r in existing}
    created = 0
    for t in trials:
        if t.trial_id in logged:
            continue
        run = mlflow_client.create_run(experiment, run_name=f"trial-{t.trial_id}", tags={
            "mlflow.parentRunId": parent_run_id, "mlrt.trial_id": t.trial_id,
            "mlrt.trial_status": t.status})
        now = int(time.time() * 1000)
        params = [Param(k, v if isinstance(v, str) else json.dumps(v))
                  for k, v in t.config.items()]
        metrics = [Metric(k, v, now, row["epoch"]) for row in t.history
                   for k, v in row.items() if k != "epoch"]
        mlflow_client.log_batch(run.info.run_id, metrics=metrics, params=params,
                                tags=[RunTag("mlrt.epochs", str(len(t.history)))])
        mlflow_client.set_terminated(run.info.run_id,
                                     "FAILED" if t.status == "ERROR" else "FINISHED")
        created += 1
    return created


# --- the registry ------------------------------------------------------------------------------


def log_model_version(name: str, model_dir: Path, signature, pip_requirements: list[str],
                      tags: dict[str, str]) -> str:
    """Log the model directory as a pyfunc model and register it as a new version of `name`."""
    import mlflow.pyfunc

    with warnings.catch_warnings(), _notices_dropped(_REGISTRY_NOTICES):
        # MLflow's advice (input_example) targets hand-written pyfunc models; ours has an
        # explicit signature and a fixed predict.
        warnings.simplefilter("ignore", UserWarning)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=PYFUNC_CODE, artifacts={"model_dir": str(model_dir)},
            signature=signature, pip_requirements=pip_requirements,
            registered_model_name=name)
    version = str(info.registered_model_version)
    for key, value in tags.items():
        set_version_tag(name, version, key, value)
    return version


MONITOR_RUN_TAG = "mlrt.monitor.last_run"  # on a model version: its latest monitoring run


def log_monitor_run(name: str, storage: str, version: str, metrics: dict[str, float],
                    report: dict, files: list[Path]) -> str:
    """One `mlrt monitor` run in the model's experiment, linked both ways to the version it
    judged (run tags name the version, the version's MONITOR_RUN_TAG names the run):
    the scores as metrics, report.json and the report's files as artifacts."""
    import mlflow

    experiment = experiment_id(name, storage)
    with start_run(experiment) as run, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mlflow.set_tags({"mlrt.kind": "monitor", "mlrt.model": name,
                         "mlrt.model_version": version, "mlflow.runName": f"monitor-v{version}"})
        mlflow.log_metrics(metrics)
        mlflow.log_dict(report, "monitoring/report.json")
        for path in files:
            mlflow.log_artifact(str(path), "monitoring")
        run_id = run.info.run_id
    set_version_tag(name, version, MONITOR_RUN_TAG, run_id)
    return run_id


def set_alias(name: str, alias: str, version: str, history_tag: str,
              history: list[str]) -> None:
    """Point `alias` at `version` and store the alias's history (a registered-model tag)."""
    mlflow_client = client()
    mlflow_client.set_registered_model_alias(name, alias, str(version))
    mlflow_client.set_registered_model_tag(name, history_tag, json.dumps(history))


def set_version_tag(name: str, version: str, key: str, value: str) -> None:
    client().set_model_version_tag(name, str(version), key, value)


def delete_version_tag(name: str, version: str, key: str) -> None:
    client().delete_model_version_tag(name, str(version), key)


class _DropLines:
    """A stderr that writes everything through except whole lines starting with `prefixes`
    (print() writes a line and its newline in two calls: lines are put together first)."""

    def __init__(self, stream, prefixes: tuple[str, ...]):
        self._stream, self._prefixes, self._pending = stream, prefixes, ""

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        kept = "".join(f"{line}\n" for line in lines if not line.startswith(self._prefixes))
        if kept:
            self._stream.write(kept)
        return len(text)

    def close_pending(self) -> None:
        if self._pending and not self._pending.startswith(self._prefixes):
            self._stream.write(self._pending)
        self._pending = ""

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def _notices_dropped(prefixes: tuple[str, ...]) -> Iterator[None]:
    original = sys.stderr
    sys.stderr = filtered = _DropLines(original, prefixes)
    try:
        yield
    finally:
        sys.stderr = original
        filtered.close_pending()
