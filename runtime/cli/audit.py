"""`mlrt audit NAME`: the audit trail of a registered model: list, replay aliases, verify.

    mlrt audit digits-mlp --since 2h             # events of the last two hours
    mlrt audit digits-mlp --at 2026-07-01T12:00  # which version each alias held then
    mlrt audit digits-mlp --verify               # exit 0 intact; 1 naming the first problem
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from runtime.cli.options import StorageOpt, err, out


def audit_cmd(
    name: str,
    storage: StorageOpt = ".mlrt",
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    since: Annotated[str | None, typer.Option(
        help="Only events at or after this time: ISO (UTC unless it says) or a duration ago "
             "(30s, 10m, 2h, 7d).", show_default=False)] = None,
    at: Annotated[str | None, typer.Option(
        help="Say which version each alias pointed at, at this time (ISO or a duration ago).",
        show_default=False)] = None,
    verify: Annotated[bool, typer.Option(
        help="Check the hash chain (and that the registry's aliases and versions are the ones "
             "the trail records): exit 0 intact, 1 naming the first problem.")] = False,
) -> None:
    """List, replay or verify the audit trail of a registered model (under STORAGE/audit/)."""
    from runtime.governance import audit

    when = audit.parse_when(at, "--at") if at else None
    start = audit.parse_when(since, "--since") if since else None
    trail = audit.load_trail(storage, name)
    if verify:
        _verify(storage, name, trail)
        return
    if not trail.events:
        _known_model(storage, name)  # an unknown name exits 2 naming the known ones
    if trail.problems:
        err().print(f"warning: the trail is broken ({trail.problems[0]}); "
                    f"mlrt audit {name} --verify says more", markup=False)
    if when is not None:
        _print_aliases(name, audit.aliases_at(trail.events, when), when.isoformat(), as_json)
        return
    events = [e for e in trail.events if start is None or e.when >= start]
    if as_json:
        print(json.dumps([e.to_json() for e in events], indent=2))
        return
    table = Table(title=f"{name}: {len(events)} event(s)", title_justify="left")
    for column in ("#", "time (UTC)", "event", "actor", "reason", "details"):
        table.add_column(column, overflow="fold")
    failed = audit.failed_seqs(trail.events)
    for e in events:
        kind = f"{e.kind} (failed)" if e.seq in failed else e.kind
        table.add_row(str(e.seq), e.time.replace("+00:00", ""), kind, e.actor, e.reason or "",
                      audit.details(e, 300))
    out().print(table)


def _verify(storage: str, name: str, trail) -> None:
    from runtime.errors import AuditError
    from runtime.governance import audit

    problems = list(trail.problems)
    registry = _registry_state(storage, name)
    if registry is not None:
        problems += audit.reconcile(trail.events, *registry)
    if problems:
        for problem in problems:
            err().print(f"broken: {problem}", markup=False, soft_wrap=True)
        raise AuditError(f"audit trail of '{name}': {problems[0]}")
    checked = "" if registry is None else "; the registry's aliases and versions match it"
    out().print(f"{name}: {len(trail.events)} event(s), hash chain intact{checked}")


def _registry_state(storage: str, name: str) -> tuple[dict[str, str], list[str]] | None:
    """The registry's aliases and versions of `name`, or None when it has no such model."""
    from runtime.errors import RegistryError
    from runtime.registry import tracking, versions

    tracking.use_store(storage)
    try:
        found = versions.list_versions(name)
    except RegistryError:
        return None
    aliases = {a: v.version for v in found for a in v.aliases}
    return aliases, [v.version for v in found]


def _known_model(storage: str, name: str) -> None:
    from runtime.registry import tracking, versions

    tracking.use_store(storage)
    versions.list_versions(name)


def _print_aliases(name: str, state: dict[str, str | None], when: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"model": name, "at": when, "aliases": state}, indent=2))
        return
    if not state:
        out().print(f"{name} at {when}: no alias pointed at any version yet")
        return
    out().print(f"{name} at {when}:")
    for alias, version in sorted(state.items()):
        out().print(f"  @{alias} -> {'v' + version if version else 'no version'}")

