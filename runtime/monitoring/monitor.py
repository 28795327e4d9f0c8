"""`mlrt monitor`: judge a served model's captured window against what it was trained on.

    report = run_monitor(target_for("jobs/digits.yaml"), since="1h")

Order: check every input (window bounds, --labels, the model in the registry) before Ray
starts; list the capture files of the days the window spans; read the profiles of the
registered versions; ONE Ray Data pass of block partials (runtime.monitoring.blocks); merge
and score (runtime.monitoring.report); write latest.json, the HTML report if asked, and an
MLflow run linked to the version (runtime.registry.tracking).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import InputError
from runtime.monitoring import report as reports
from runtime.monitoring.settings import DriftSettings
from runtime.monitoring.source import capture_files, parse_window, read_labels

# registered versions whose profiles are read (newest first, plus every aliased one): rows of
# older versions are counted as unknown_rows
MAX_VERSIONS = 20


@dataclass(frozen=True)
class MonitorTarget:
    name: str
    storage: str
    alias: str | None
    version: str | None
    settings: DriftSettings = field(default_factory=DriftSettings)
    metrics: tuple[str, ...] = ()  # the spec's evaluate.metrics; () = the task's


def target_for(spec_or_uri: str, storage: str = ".mlrt",
               overrides: list[str] | None = None) -> MonitorTarget:
    """A spec file (its name, storage, register.alias and monitor.drift) or a model URI."""
    from runtime.registry.uris import parse_model_uri

    if spec_or_uri.startswith("models:/"):
        name, version, alias = parse_model_uri(spec_or_uri)
        return MonitorTarget(name, storage, alias, version)
    from runtime.spec import load_spec

    spec = load_spec(Path(spec_or_uri), overrides or [])
    return MonitorTarget(spec.name, spec.storage, spec.register.alias, None,
                         spec.monitor.drift, tuple(spec.evaluate.metrics or ()))


def run_monitor(target: MonitorTarget, since: str | None = None, until: str | None = None,
                labels_file: str | None = None, html: str | None = None,
                address: str | None = None, echo: Callable[[str], None] = print) -> dict:
    start, end = parse_window(since, until)
    if labels_file is not None and "://" not in labels_file and not Path(labels_file).is_file():
        raise InputError(f"--labels: {labels_file} does not exist")
    if html is not None and not html.endswith((".html", ".htm")):
        raise InputError(f"--report: {html}: expected a .html file name")
    from runtime.registry import tracking, versions
    from runtime.registry.uris import resolve_version
    from runtime.spec import task_metrics

    tracking.use_store(target.storage)
    champion = resolve_version(target.name, target.version, target.alias)
    task = champion.tags.get("mlrt.task", "classification")
    metrics = list(target.metrics or task_metrics(task))
    fs, files = capture_files(target.storage, target.name, start, end)
    echo(f"  {target.name} v{champion.version}: {len(files)} capture files between "
         f"{start:%Y-%m-%d %H:%M:%S} and {end:%Y-%m-%d %H:%M:%S} UTC")
    infos = _version_infos(target.name, champion, versions.list_versions(target.name))
    labels = read_labels(target.storage, target.name, start, labels_file)
    buckets = reports.bucket_count(start, end)
    merged = _window_pass(fs, files, {
        "start_us": _us(start), "end_us": _us(end), "buckets": buckets, "task": task,
        "labels": labels, "versions": infos}, address) if files else None
    merged = merged or {"rows": 0, "unknown_rows": 0, "versions": {}}
    shown = [champion.version] + sorted((v for v in merged["versions"] if v != champion.version),
                                        key=int, reverse=True)
    per_version = [reports.version_report(v, merged["versions"].get(v), infos[v], task, metrics,
                                          target.settings, start, end, buckets) for v in shown]
    report = reports.full_report(target.name, champion.version, per_version, start, end,
                                 merged["unknown_rows"])
    report["latest"] = reports.write_latest(target.storage, report)
    report["html"] = _write_html(report, html)
    report["mlflow_run"] = _log_run(target, report)
    return report


def _us(when) -> int:
    return int(when.timestamp() * 1_000_000)


def _version_infos(name: str, champion, listed: list) -> dict[str, dict]:
    """Per version: its profile, prediction profile and classes (the reference files only)."""
    from runtime.registry.model_dir import (
        META_FILE,
        PREDICTION_PROFILE_FILE,
        PROFILE_FILE,
        fetch_model,
    )

    chosen = [v for v in listed if v.aliases or v.version == champion.version]
    chosen += [v for v in sorted(listed, key=lambda v: -int(v.version)) if v not in chosen]
    infos = {}
    for info in chosen[:max(MAX_VERSIONS, len([v for v in chosen if v.aliases]))]:
        files = fetch_model(f"models:/{name}/{info.version}").files
        if PROFILE_FILE not in files:
            continue  # registered before profiles: nothing to compare with
        prediction = files.get(PREDICTION_PROFILE_FILE)
        infos[info.version] = {
            "profile": json.loads(files[PROFILE_FILE]),
            "prediction_profile": json.loads(prediction) if prediction else None,
            "classes": json.loads(files[META_FILE]).get("classes"),
            "aliases": info.aliases}
    if champion.version not in infos:
        raise InputError(f"{name} v{champion.version} has no {PROFILE_FILE} (registered before "
                         "mlrt stored data profiles): retrain it to monitor it")
    return infos


def _window_pass(fs, files: list[str], context: dict, address: str | None) -> dict:
    """The window in one Ray Data pass: a partial per block, merged here."""
    import ray.data

    from runtime.cluster.connect import init_ray
    from runtime.monitoring.blocks import block_partial, merge_blocks

    init_ray(address)
    context = {**context, "labels": ray.put(context["labels"])}
    dataset = ray.data.read_parquet(files, filesystem=fs)
    rows = dataset.map_batches(_block_with_labels, fn_kwargs={"context": context,
                                                             "fn": block_partial},
                               batch_format="pyarrow", batch_size=None)
    return merge_blocks([json.loads(r["partial"]) for r in rows.iter_rows()], context["task"])


def _block_with_labels(batch, context: dict, fn):
    import ray

    # the labels go to the object store once; each block task reads them from there
    return fn(batch, {**context, "labels": ray.get(context["labels"])})


def _write_html(report: dict, html: str | None) -> str | None:
    if html is None:
        return None
    from runtime.monitoring.html import render_html

    path = Path(html)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report))
    return str(path)


def _log_run(target: MonitorTarget, report: dict) -> str:
    from runtime.registry import tracking

    drift = report["drift"]
    metrics = {f"drift.{n}": f["score"] for n, f in drift["features"].items()
               if f["score"] is not None}
    metrics.update({"rows": report["rows"], "drift_detected": float(drift["detected"]),
                    "drifted_features": len(drift["drifted_features"])})
    quality = report["quality"]
    if quality["coverage"] is not None:
        metrics["label_coverage"] = quality["coverage"]
    metrics.update({f"quality.{k}": v for k, v in quality["metrics"].items()})
    metrics.update({f"latency.{k}": v for k, v in report["latency"].items()
                    if k != "rows" and v is not None})
    files: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="mlrt-monitor-") as tmp:
        if report["html"]:
            files.append(Path(report["html"]))
            from runtime.monitoring.html import figures

            for name, svg in figures(report).items():
                files.append(Path(tmp) / f"{name}.svg")
                files[-1].write_text(svg)
        return tracking.log_monitor_run(target.name, target.storage, report["version"],
                                        metrics, reports.public_json(report), files)
