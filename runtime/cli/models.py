"""`mlrt models list|show|promote|rollback|approve|reject|card`: registered versions, their
aliases and history. Every decision takes --reason (required) and --actor, and is written to
the audit trail before it is reported done (`mlrt audit NAME`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from runtime.cli.options import (
    ActorOpt,
    AliasOpt,
    ReasonOpt,
    StorageOpt,
    err,
    out,
    require_reason,
)


def models_list(name: str, storage: StorageOpt = ".mlrt") -> None:
    """List the versions of a registered model with their metrics, gate and aliases."""
    from runtime.registry import tracking, versions

    tracking.use_store(storage)
    found = versions.list_versions(name)
    table = Table(title=f"{name}: {len(found)} version(s)", title_justify="left")
    metric_names = sorted({m for v in found for m in v.metrics})
    for column in ["version", "aliases", "gate", *metric_names, "run id"]:
        table.add_column(column)
    for v in found:
        table.add_row(v.version, ", ".join(f"@{a}" for a in v.aliases), v.gate,
                      *[f"{v.metrics[m]:.4f}" if m in v.metrics else "-" for m in metric_names],
                      (v.run_id or "-")[:12])
    out().print(table)


def models_show(
    name: str,
    version: Annotated[str, typer.Argument(help="Version number or @alias.")] = "@champion",
    storage: StorageOpt = ".mlrt",
) -> None:
    """Show one version: metrics, slices, gate verdict, lineage (run, spec hash, data, git)."""
    from runtime.errors import RegistryError
    from runtime.governance.card import slices_of
    from runtime.registry import tracking, versions

    tracking.use_store(storage)
    if version.startswith("@"):
        info = versions.version_by_alias(name, version[1:])
        if info is None:
            versions.list_versions(name)  # names an unknown model
            raise RegistryError(f"model '{name}' has no alias '{version[1:]}'")
    else:
        info = versions.get_version(name, version)
    out().print(json.dumps({
        "name": name, "version": info.version, "aliases": info.aliases, "run_id": info.run_id,
        "metrics": info.metrics, "slices": slices_of(info),
        "tags": {k: v for k, v in info.tags.items()
                 if k not in ("mlrt.metrics", tracking.SLICES_TAG)},
        "uri": f"models:/{name}/{info.version}",
    }, indent=2))


def models_promote(name: str, version: str, alias: AliasOpt = "champion",
                   storage: StorageOpt = ".mlrt", reason: ReasonOpt = None,
                   actor: ActorOpt = None) -> None:
    """Point ALIAS at VERSION (remembering the old one for rollback)."""
    from runtime.governance import audit
    from runtime.registry import tracking, versions

    require_reason(reason, "promote")
    tracking.use_store(storage)
    before = versions.move_alias(name, alias, version,
                                 audit.Note(storage, actor, reason, audit.PROMOTED))
    _refresh(storage, name, before, version)
    was = f" (was v{before})" if before else ""
    out().print(f"{name}@{alias} -> v{version}{was}")


def models_rollback(name: str, alias: AliasOpt = "champion",
                    storage: StorageOpt = ".mlrt", reason: ReasonOpt = None,
                    actor: ActorOpt = None) -> None:
    """Move ALIAS back to the version it held before."""
    from runtime.governance import audit
    from runtime.registry import tracking, versions

    require_reason(reason, "roll back")
    tracking.use_store(storage)
    was, now = versions.rollback(name, alias, audit.Note(storage, actor, reason))
    _refresh(storage, name, was, now)
    out().print(f"{name}@{alias} -> v{now} (rolled back from v{was})")


def models_approve(name: str, version: str, storage: StorageOpt = ".mlrt",
                   reason: ReasonOpt = None, actor: ActorOpt = None) -> None:
    """Approve a version waiting for approval: its serving alias moves to it."""
    from runtime.governance import approvals
    from runtime.registry import tracking

    require_reason(reason, "approve")
    tracking.use_store(storage)
    alias, before = approvals.approve(storage, name, version, actor, reason)
    _refresh(storage, name, before, version)
    was = f" (was v{before})" if before else ""
    out().print(f"approved {name} v{version}: {name}@{alias} -> v{version}{was}")


def models_reject(name: str, version: str, storage: StorageOpt = ".mlrt",
                  reason: ReasonOpt = None, actor: ActorOpt = None) -> None:
    """Reject a version waiting for approval: tagged rejected, no alias moves."""
    from runtime.governance import approvals
    from runtime.registry import tracking

    require_reason(reason, "reject")
    tracking.use_store(storage)
    approvals.reject(storage, name, version, actor, reason)
    _refresh(storage, name, version)
    out().print(f"rejected {name} v{version}")


def models_card(
    name: str, version: str, storage: StorageOpt = ".mlrt",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write to this file: .html for a web page, else Markdown "
                               "(default: Markdown on stdout).", show_default=False)] = None,
) -> None:
    """A version's model card: description, data, training, evaluation, lineage, audit."""
    from runtime.governance import card
    from runtime.registry import tracking

    tracking.use_store(storage)
    sections = card.build_card(storage, name, version)
    if output is None:
        print(card.render_markdown(sections), end="")
        return
    html = output.suffix.lower() in (".html", ".htm")
    output.write_text(card.render_html(sections) if html else card.render_markdown(sections))
    err().print(f"wrote {output}", markup=False)


def _refresh(storage: str, name: str, *changed: str | None) -> None:
    from runtime.governance.card import refresh_cards

    for warning in refresh_cards(storage, name, *changed):
        err().print(f"warning: {warning}", markup=False)
