"""Registered model versions and their aliases: look-ups, promote (move) and rollback.

Aliases keep a history (a registered-model tag per alias) so that `rollback` can move an alias
back to the version it held before. Reads go to MLflow directly; every write goes through
runtime.registry.tracking.

Every alias move is audited here, at the one place that moves aliases: `move_alias` and
`rollback` take an audit Note (who, why, where the trail is) and write the event before the
alias moves (runtime.governance.audit.recorded), so no caller can move an alias unaudited and
none is told "done" without its event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from runtime.errors import RegistryError
from runtime.governance import audit
from runtime.registry import tracking

_HISTORY_TAG = "mlrt.alias_history.{alias}"
_HISTORY_KEEP = 50
# Set on the version an alias was rolled back from; a canary (serve.canary) sends it no traffic
# until it is promoted again.
ROLLED_BACK_TAG = "mlrt.rolled_back"


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
    client = tracking.client()
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
        return _info(tracking.client().get_model_version(name, str(version)))
    except MlflowException as e:
        raise RegistryError(f"model '{name}' has no version {version}") from e


def version_by_alias(name: str, alias: str) -> VersionInfo | None:
    from mlflow.exceptions import MlflowException

    try:
        return _info(tracking.client().get_model_version_by_alias(name, alias))
    except MlflowException:
        return None


def _require_model(name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        tracking.client().get_registered_model(name)
    except MlflowException as e:
        known = [m.name for m in tracking.client().search_registered_models()]
        raise RegistryError(f"no registered model '{name}' (known: {', '.join(known) or 'none'})"
                            ) from e


def _history(name: str, alias: str) -> list[str]:
    tags = tracking.client().get_registered_model(name).tags or {}
    return json.loads(tags.get(_HISTORY_TAG.format(alias=alias), "[]"))


def move_alias(name: str, alias: str, version: str, note: audit.Note) -> str | None:
    """Point `alias` at `version`, remembering where it pointed before; return that version.
    The move is recorded (note.kind: alias_moved, promoted, approved) before it happens."""
    if note.kind not in audit.MOVES:
        raise ValueError(f"an alias move is audited as one of {sorted(audit.MOVES)}, "
                         f"not '{note.kind}'")
    target = get_version(name, version)
    current = version_by_alias(name, alias)
    history = _history(name, alias)
    if current is not None and (not history or history[-1] != current.version):
        history.append(current.version)  # moved outside mlrt (e.g. in the MLflow UI)
    if not history or history[-1] != str(version):
        history.append(str(version))
    with _recorded(note, note.kind, name, alias, current.version if current else None,
                   str(version)):
        tracking.set_alias(name, alias, str(version), _HISTORY_TAG.format(alias=alias),
                           history[-_HISTORY_KEEP:])
        if target.tags.get(ROLLED_BACK_TAG):  # moving the alias does not touch version tags
            tracking.delete_version_tag(name, str(version), ROLLED_BACK_TAG)
    return current.version if current else None


def _recorded(note: audit.Note, kind: str, name: str, alias: str, before: str | None,
              after: str):
    return audit.recorded(note.storage, name, kind, note.actor, note.reason,
                          **{**note.fields, "alias": alias, "from": before, "to": after})


def rollback(name: str, alias: str, note: audit.Note) -> tuple[str, str]:
    """Move `alias` back to the version it held before; return (from_version, to_version).
    Recorded as a rolled_back event (a reason is required) before the alias moves."""
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
    with _recorded(note, audit.ROLLED_BACK, name, alias, current.version, target):
        tracking.set_alias(name, alias, target, _HISTORY_TAG.format(alias=alias), history)
        tracking.set_version_tag(name, current.version, ROLLED_BACK_TAG, "true")
    return current.version, target


