"""Model cards: one registered version described from what the registry and the audit trail
hold, as Markdown (stdout, or logged as `model_card.md` with the version's run) or HTML.

    mlrt models card digits-mlp 3                  # Markdown on stdout
    mlrt models card digits-mlp 3 -o card.html     # a standalone HTML page

Sections: the `card:` spec section (description, owner, intended use, limitations); data
(source, fingerprint, rows, profile summary); training (spec hash, parameters, git commit);
evaluation (metrics, gate, slices); lineage (run, parent version, trigger); the version's audit
history. The card is built as a list of sections once and rendered twice, so Markdown and HTML
cannot disagree; every text from a spec or a tag is escaped in both.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from runtime.governance import audit
from runtime.registry import tracking, versions

CARD_FILE = "model_card.md"
_PROFILE_ROWS = 20
_TRAINING_PARAMS = ("model.", "train.", "data.preprocess", "evaluate.", "register.")


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)  # paragraphs
    fields: list[tuple[str, str]] = field(default_factory=list)  # name: value lines
    header: list[str] = field(default_factory=list)  # a table, when rows are given
    rows: list[list[str]] = field(default_factory=list)


def build_card(storage: str, name: str, version: str) -> list[Section]:
    """The card of `name` v`version` as sections (reads MLflow and the audit trail only)."""
    info = versions.get_version(name, version)
    run = _run(info.run_id)
    params = dict(run.data.params) if run else {}
    spec = _artifact_yaml(info.run_id, "spec.yaml") or {}
    events = [e for e in audit.load_trail(storage, name).events if _about(e, info.version)]
    return [_summary(name, info), _words(spec.get("card") or {}), _data(info, run, params),
            _training(info, params), _evaluation(info), _lineage(info, run),
            _history(events)]


def render_markdown(sections: list[Section]) -> str:
    lines = []
    for i, s in enumerate(sections):
        lines += [f"{'#' if i == 0 else '##'} {_md(s.title)}", ""]
        lines += [line for p in s.text for line in (_md(p), "")]
        if s.fields:
            lines += [f"- **{_md(k)}**: {_md(v)}" for k, v in s.fields] + [""]
        if s.rows:
            lines.append("| " + " | ".join(_md(h) for h in s.header) + " |")
            lines.append("|" + "---|" * len(s.header))
            lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in s.rows]
            lines.append("")
    return "\n".join(lines)


def render_html(sections: list[Section]) -> str:
    e = html.escape
    body = []
    for i, s in enumerate(sections):
        tag = "h1" if i == 0 else "h2"
        body.append(f"<{tag}>{e(s.title)}</{tag}>")
        body += [f"<p>{e(p)}</p>" for p in s.text]
        if s.fields:
            body.append("<ul>" + "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in s.fields)
                        + "</ul>")
        if s.rows:
            head = "".join(f"<th>{e(h)}</th>" for h in s.header)
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                           for row in s.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    title = e(sections[0].title) if sections else "Model card"
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>body{{font-family:sans-serif;max-width:60em;"
            "margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:2px 6px;text-align:left}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def log_card(storage: str, name: str, version: str) -> None:
    """Log (or refresh) the card as `model_card.md` with the version's run."""
    info = versions.get_version(name, version)
    if info.run_id:
        tracking.log_text_to_run(info.run_id, render_markdown(build_card(storage, name, version)),
                                 CARD_FILE)


def refresh_cards(storage: str, name: str, *changed: str | None) -> list[str]:
    """After an alias moved: log the cards of the versions it moved from and to again. The
    move is done and audited already, so a card that cannot be written is a warning (returned),
    not a failure."""
    from mlflow.exceptions import MlflowException

    warnings = []
    for version in dict.fromkeys(v for v in changed if v):
        try:
            log_card(storage, name, version)
        except (MlflowException, OSError) as e:
            warnings.append(f"model card of v{version} not refreshed: {e}")
    return warnings


def slices_of(info: versions.VersionInfo) -> list[dict]:
    """The slice metrics recorded with a version (tag `mlrt.slices`, else its run's
    `slices.json`)."""
    raw = info.tags.get(tracking.SLICES_TAG)
    if not raw:
        return []
    data = json.loads(raw)
    if isinstance(data, dict) and data.get("artifact"):
        return _artifact_json(info.run_id, data["artifact"]) or []
    return data


def _md(text: str) -> str:
    """Markdown that shows the text as written: `&` and `<` escaped, so no tag or entity from a
    spec or tag reaches a renderer that passes HTML through; table pipes and newlines
    neutralised. (`>` cannot open a tag and stays readable: `accuracy 0.97 >= 0.9`.)"""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;")
    return text.replace("|", "\\|").replace("\n", " ")


def _about(event: audit.Event, version: str) -> bool:
    data = event.data
    return version in {str(data.get(k)) for k in ("version", "to", "from") if data.get(k)}


def _summary(name: str, info: versions.VersionInfo) -> Section:
    created = datetime.fromtimestamp(info.created / 1000, UTC).isoformat(timespec="seconds")
    return Section(f"Model card: {name} v{info.version}", fields=[
        ("model URI", f"models:/{name}/{info.version}"),
        ("aliases", ", ".join(f"@{a}" for a in info.aliases) or "none"),
        ("registered", created),
        ("task", info.tags.get("mlrt.task", "-")),
        ("approval", info.tags.get("mlrt.approval", "auto")),
    ])


def _words(card: dict) -> Section:
    given = [(label, str(card[key])) for key, label in (
        ("description", "description"), ("owner", "owner"), ("intended_use", "intended use"),
        ("limitations", "limitations")) if card.get(key)]
    if not given:
        return Section("About", text=["No card section in the spec (card: description, owner, "
                                      "intended_use, limitations)."])
    return Section("About", fields=given)


def _data(info: versions.VersionInfo, run, params: dict) -> Section:
    source = ", ".join(f"{k.removeprefix('data.source.')}={v}" for k, v in sorted(params.items())
                       if k.startswith("data.source."))
    section = Section("Data", fields=[
        ("source", source or "-"), ("target", params.get("data.target", "-")),
        ("fingerprint", info.tags.get("mlrt.data_fingerprint", "-")),
        ("rows", (run.data.tags.get("mlrt.rows") if run else None) or "-"),
    ])
    profile = _artifact_json(info.run_id, "profile.json") or {}
    features = profile.get("features", {})
    kinds = [p.get("type") for p in features.values()]
    section.fields.append(("profile", f"{profile.get('rows', '-')} training rows, "
                                      f"{kinds.count('numeric')} numeric and "
                                      f"{kinds.count('categorical')} categorical features"))
    section.header = ["feature", "type", "nulls", "mean", "std", "min", "max / distinct"]
    for column, p in list(features.items())[:_PROFILE_ROWS]:
        numeric = p.get("type") == "numeric"
        section.rows.append([column, str(p.get("type")), str(p.get("nulls", "-")),
                             _num(p.get("mean")) if numeric else "",
                             _num(p.get("std")) if numeric else "",
                             _num(p.get("min")) if numeric else "",
                             _num(p.get("max") if numeric else p.get("distinct"))])
    if len(features) > _PROFILE_ROWS:
        section.text.append(f"Profile of the first {_PROFILE_ROWS} of {len(features)} "
                            "features (all in the run's profile.json).")
    return section


def _training(info: versions.VersionInfo, params: dict) -> Section:
    section = Section("Training", fields=[
        ("spec hash", info.tags.get("mlrt.spec_hash", "-")),
        ("git commit", info.tags.get("mlrt.git_commit") or "-"),
    ])
    section.header = ["parameter", "value"]
    section.rows = [[k, v] for k, v in sorted(params.items()) if k.startswith(_TRAINING_PARAMS)]
    return section


def _evaluation(info: versions.VersionInfo) -> Section:
    section = Section("Evaluation", fields=[
        ("gate", info.gate), ("gate reason", info.tags.get("mlrt.gate_reason", "-")),
        *[(f"test {k}", _num(v)) for k, v in info.metrics.items()],
    ])
    slices = slices_of(info)
    if slices:
        names = sorted({m for s in slices for m in s["metrics"]})
        section.header = ["slice", "rows", "gated", *names]
        section.rows = [[f"{s['column']}={s['value']}", str(s["rows"]),
                         "yes" if s["gated"] else "no (too few rows)",
                         *[_num(s["metrics"].get(m)) for m in names]] for s in slices]
    else:
        section.text.append("No slices (evaluate.slices).")
    return section


def _lineage(info: versions.VersionInfo, run) -> Section:
    tags = {**(dict(run.data.tags) if run else {}), **info.tags}
    section = Section("Lineage", fields=[
        ("run", info.run_id or "-"),
        ("parent version", tags.get("mlrt.parent_version") or "none (not a retrain)"),
    ])
    triggers = sorted((k, v) for k, v in tags.items() if k.startswith("mlrt.trigger"))
    section.fields += triggers or [("trigger", "none (run by hand)")]
    return section


def _history(events: list[audit.Event]) -> Section:
    section = Section("Audit history", header=["#", "time", "event", "actor", "reason",
                                               "details"])
    section.rows = [[str(e.seq), e.time, e.kind, e.actor, e.reason or "", audit.details(e)]
                    for e in events]
    if not events:
        section.text.append("No audit events for this version.")
    return section


def _num(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _run(run_id: str | None):
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        return tracking.client().get_run(run_id)
    except MlflowException:
        return None


def _artifact_json(run_id: str | None, path: str):
    text = _artifact_text(run_id, path)
    return json.loads(text) if text else None


def _artifact_yaml(run_id: str | None, path: str):
    import yaml

    text = _artifact_text(run_id, path)
    return yaml.safe_load(text) if text else None


def _artifact_text(run_id: str | None, path: str) -> str | None:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
    except (MlflowException, OSError):
        return None
