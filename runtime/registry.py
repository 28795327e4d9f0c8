"""MLflow: tracking store, model versions, aliases with history, promote and rollback.

Default store: sqlite under the spec's `storage` (`.mlrt/mlflow.db`, artifacts in
`.mlrt/mlartifacts`); `MLFLOW_TRACKING_URI` overrides it. Browse it with
`mlflow ui --backend-store-uri sqlite:///.mlrt/mlflow.db`.

Aliases keep a history (a registered-model tag per alias) so that `rollback` can move an alias
back to the version it held before.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import RegistryError

PYFUNC_CODE = str(Path(__file__).with_name("pyfunc_model.py"))
_HISTORY_TAG = "mlrt.alias_history.{alias}"
_HISTORY_KEEP = 50
# Set on the version an alias was rolled back from; a canary (serve.canary) sends it no traffic
# until it is promoted again.
ROLLED_BACK_TAG = "mlrt.rolled_back"
_URI_VARS = frozenset({"MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"})


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
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        with contextlib.suppress(ValueError):
            path = path.relative_to(Path.cwd())
        uri = f"sqlite:///{path}"
    return f"mlflow ui --backend-store-uri {uri}"


def experiment_id(name: str, storage: str) -> str:
    import mlflow

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        location = (Path(storage).absolute() / "mlartifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def log_model_version(name: str, model_dir: Path, signature, pip_requirements: list[str],
                      tags: dict[str, str]) -> str:
    """Log the model directory as a pyfunc model and register it as a new version of `name`."""

    with warnings.catch_warnings():
        # MLflow's advice (type hints, input_example) targets hand-written pyfunc models; ours
        # has an explicit signature and a fixed predict.
        warnings.simplefilter("ignore", UserWarning)
        info = _log_pyfunc(name, model_dir, signature, pip_requirements)
    version = str(info.registered_model_version)
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return version


def _log_pyfunc(name: str, model_dir: Path, signature, pip_requirements: list[str]):
    import mlflow.pyfunc

    return mlflow.pyfunc.log_model(
        name="model",
        python_model=PYFUNC_CODE,
        artifacts={"model_dir": str(model_dir)},
        signature=signature,
        pip_requirements=pip_requirements,
        registered_model_name=name,
    )


@dataclass(frozen=True)
class VersionInfo:
    version: str
    aliases: list[str]
    metrics: dict[str, float]
    tags: dict[str, str]
    run_id: str | None
    created: int

    @property
    def gate(self) -> str:
        return self.tags.get("mlrt.gate", "-")


def _info(mv) -> VersionInfo:
    tags = dict(mv.tags or {})
    metrics = json.loads(tags.get("mlrt.metrics", "{}"))
    return VersionInfo(str(mv.version), list(mv.aliases or []), metrics, tags, mv.run_id,
                       int(mv.creation_timestamp or 0))


def list_versions(name: str) -> list[VersionInfo]:
    _require_model(name)
    client = _client()
    # search results carry no aliases in every store: take them from the registered model
    aliases = client.get_registered_model(name).aliases or {}
    infos = []
    for mv in client.search_model_versions(f"name='{name}'"):
        info = _info(mv)
        info.aliases[:] = sorted(a for a, v in aliases.items() if str(v) == info.version)
        infos.append(info)
    return sorted(infos, key=lambda v: int(v.version))


def get_version(name: str, version: str) -> VersionInfo:
    from mlflow.exceptions import MlflowException

    _require_model(name)
    try:
        return _info(_client().get_model_version(name, str(version)))
    except MlflowException as e:
        raise RegistryError(f"model '{name}' has no version {version}") from e


def version_by_alias(name: str, alias: str) -> VersionInfo | None:
    from mlflow.exceptions import MlflowException

    try:
        return _info(_client().get_model_version_by_alias(name, alias))
    except MlflowException:
        return None


def _require_model(name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        _client().get_registered_model(name)
    except MlflowException as e:
        known = [m.name for m in _client().search_registered_models()]
        raise RegistryError(f"no registered model '{name}' (known: {', '.join(known) or 'none'})"
                            ) from e


def _history(name: str, alias: str) -> list[str]:
    tags = _client().get_registered_model(name).tags or {}
    return json.loads(tags.get(_HISTORY_TAG.format(alias=alias), "[]"))


def move_alias(name: str, alias: str, version: str) -> str | None:
    """Point `alias` at `version`, remembering where it pointed before; return that version."""
    target = get_version(name, version)
    current = version_by_alias(name, alias)
    history = _history(name, alias)
    if current is not None and (not history or history[-1] != current.version):
        history.append(current.version)  # moved outside mlrt (e.g. in the MLflow UI)
    if not history or history[-1] != str(version):
        history.append(str(version))
    client = _client()
    client.set_registered_model_alias(name, alias, str(version))
    client.set_registered_model_tag(name, _HISTORY_TAG.format(alias=alias),
                                    json.dumps(history[-_HISTORY_KEEP:]))
    if target.tags.get(ROLLED_BACK_TAG):  # moving the alias does not touch version tags
        client.delete_model_version_tag(name, str(version), ROLLED_BACK_TAG)
    return current.version if current else None


def rollback(name: str, alias: str) -> tuple[str, str]:
    """Move `alias` back to the version it held before; return (from_version, to_version)."""
    _require_model(name)
    current = version_by_alias(name, alias)
    if current is None:
        raise RegistryError(f"model '{name}' has no alias '{alias}' to roll back")
    history = _history(name, alias)
    if history and history[-1] == current.version:
        history.pop()
    if not history:
        raise RegistryError(f"alias '{alias}' of '{name}' has held no other version "
                            f"(it is on v{current.version})")
    target = history[-1]
    client = _client()
    client.set_registered_model_alias(name, alias, target)
    client.set_registered_model_tag(name, _HISTORY_TAG.format(alias=alias), json.dumps(history))
    client.set_model_version_tag(name, current.version, ROLLED_BACK_TAG, "true")
    return current.version, target


