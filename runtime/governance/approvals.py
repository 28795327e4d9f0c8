"""Approval before the serving alias moves (`register.approval: manual`).

    mlrt models approve digits-mlp 4 --reason "reviewed slices with the risk team"
    mlrt models reject digits-mlp 4 --reason "worse on the new region"

With manual approval a version that passes its gate gets `@candidate` and the tags
`mlrt.approval=pending` and `mlrt.approval_alias=<register.alias>`; approving moves that serving
alias to it (replicas follow the alias), rejecting tags it `rejected`. Each is an audit event
written before it is done (approve: `approved` with alias, from, to; reject: `rejected`). The
watcher asks `awaiting_approval` / `pending_versions` before promoting a retrained version.
"""

from __future__ import annotations

from runtime.errors import InputError
from runtime.governance import audit
from runtime.registry import tracking, versions
from runtime.spec import CANDIDATE_ALIAS

APPROVAL_TAG = "mlrt.approval"  # pending | approved | rejected
APPROVAL_ALIAS_TAG = "mlrt.approval_alias"  # the serving alias an approval moves
PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"


def awaiting_approval(name: str, version: str) -> bool:
    """True when `name` v`version` passed its gate under manual approval and nobody has
    approved or rejected it yet."""
    return versions.get_version(name, version).tags.get(APPROVAL_TAG) == PENDING


def pending_versions(name: str) -> list[str]:
    """The versions of `name` waiting for approval, oldest first."""
    return [v.version for v in versions.list_versions(name)
            if v.tags.get(APPROVAL_TAG) == PENDING]


def registration_tags(approval: str, passed: bool, alias: str) -> dict[str, str]:
    """Tags a new version gets: pending (with its serving alias) under manual approval."""
    if approval != "manual" or not passed:
        return {}
    return {APPROVAL_TAG: PENDING, APPROVAL_ALIAS_TAG: alias}


def gate_alias(approval: str, alias: str) -> str:
    """The alias a passing gate moves: the serving alias, or @candidate under manual."""
    return CANDIDATE_ALIAS if approval == "manual" else alias


def approve(storage: str, name: str, version: str, actor: str | None,
            reason: str | None) -> tuple[str, str | None]:
    """Move the version's serving alias to it; return (alias, the version it held before)."""
    alias = _pending(name, version, "approve").tags.get(APPROVAL_ALIAS_TAG, "champion")
    note = audit.Note(storage, actor, reason, audit.APPROVED, {"version": str(version)})
    before = versions.move_alias(name, alias, str(version), note)
    tracking.set_version_tag(name, str(version), APPROVAL_TAG, APPROVED)
    return alias, before


def reject(storage: str, name: str, version: str, actor: str | None,
           reason: str | None) -> None:
    """Tag the version rejected; the serving alias stays where it is."""
    _pending(name, version, "reject")
    with audit.recorded(storage, name, audit.REJECTED, actor, reason, version=str(version)):
        tracking.set_version_tag(name, str(version), APPROVAL_TAG, REJECTED)


def _pending(name: str, version: str, verb: str) -> versions.VersionInfo:
    info = versions.get_version(name, version)
    state = info.tags.get(APPROVAL_TAG)
    if state != PENDING:
        why = (f"it was {state}" if state else
               "it was not registered for approval (register.approval: manual, gate passed)")
        raise InputError(f"cannot {verb} {name} v{version}: {why}; waiting: "
                         f"{', '.join(pending_versions(name)) or 'none'}")
    return info
