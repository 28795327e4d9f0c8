"""`mlrt monitor`: drift, quality and latency of a served model's captured window.

    mlrt monitor jobs/digits.yaml --since 1h --report monitor.html
    mlrt monitor models:/digits-mlp@champion --storage .mlrt --labels late.csv --json
    mlrt monitor jobs/digits.yaml --fail-on-drift     # exit 1 when drift is found (CI, cron)
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from runtime.cli.options import SetOpt, StorageOpt, echo, out


def monitor_cmd(
    target: Annotated[str, typer.Argument(
        help="Job spec YAML (its name, storage, register.alias, monitor.drift) or a model URI "
             "(models:/NAME@ALIAS, models:/NAME/VERSION).", show_default=False)],
    since: Annotated[str, typer.Option(
        help="Window start: a duration before now (30s, 10m, 2h, 7d) or an ISO time.")] = "24h",
    until: Annotated[str | None, typer.Option(
        help="Window end: a duration before now or an ISO time (default: now).",
        show_default=False)] = None,
    labels: Annotated[str | None, typer.Option(
        help="Labels csv/parquet with request_id, label (joined with the stored ones; wins).",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the report as JSON on the last line of stdout.")] = False,
    report: Annotated[str | None, typer.Option(
        "--report", help="Write a self-contained HTML report with plots to this file.",
        show_default=False)] = None,
    fail_on_drift: Annotated[bool, typer.Option(
        help="Exit 1 when the served version's features drifted.")] = False,
    storage: StorageOpt = ".mlrt",
    overrides: SetOpt = None,
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join. Default: a local Ray, or RAY_ADDRESS when set.",
        show_default=False)] = None,
) -> None:
    """Judge the captured window of a served model: per-feature drift against the version's
    training profile, prediction drift, quality on labeled rows, latency. Exit 0 it ran, 1 with
    --fail-on-drift and drift found, 2 bad input."""
    from runtime.cluster.connect import shutdown_ray
    from runtime.monitoring.monitor import run_monitor, target_for
    from runtime.monitoring.report import public_json

    chosen = target_for(target, storage, overrides or [])
    try:
        result = run_monitor(chosen, since, until, labels, report, address, echo)
    finally:
        shutdown_ray()
    print_report(result)
    if as_json:
        out().file.flush()
        sys.stdout.write(json.dumps(public_json(result), sort_keys=True) + "\n")
        sys.stdout.flush()
    if fail_on_drift and result["drift"]["detected"]:
        raise typer.Exit(1)


def print_report(result: dict) -> None:
    from rich.table import Table

    console = out()
    console.print(f"[bold]{result['model']}[/] v{result['version']} "
                  f"{result['window']['since']} .. {result['window']['until']}: "
                  f"{result['message']}")
    for version in result["versions"]:
        table = Table(title=f"v{version['version']} "
                            f"{' '.join('@' + a for a in version['aliases'])} "
                            f"({version['rows']} rows)", title_justify="left")
        for column in ("feature", "method", "score", "threshold", "null rate", "status"):
            table.add_column(column)
        families = [("", version["drift"])]
        if version["prediction_drift"] is not None:
            families.append(("(prediction) ", version["prediction_drift"]))
        for prefix, drift in families:
            for name, f in drift["features"].items():
                style = "red" if f["drifted"] else None
                table.add_row(prefix + name, f["method"],
                              "-" if f["score"] is None else f"{f['score']:.4f}",
                              f"{f['threshold']:g}", str(f.get("null_rate", "-")), f["status"],
                              style=style)
        console.print(table)
        q, lat = version["quality"], version["latency"]
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in q["metrics"].items()) or "no labels"
        console.print(f"  quality: {q['labeled']} labeled (coverage {q['coverage']}): "
                      f"{metrics}; latency p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms")
        for arm, a in q["arms"].items():
            arm_metrics = ", ".join(f"{k}={v:.4f}" for k, v in a["metrics"].items()) or "-"
            console.print(f"    arm {arm}: {a['rows']} rows, {a['labeled']} labeled: "
                          f"{arm_metrics}")
    if result["unknown_rows"]:
        console.print(f"  {result['unknown_rows']} rows of versions without a profile skipped")
    if result.get("html"):
        console.print(f"  report: {result['html']}")
    console.print(f"  latest: {result['latest']}; MLflow run {result['mlflow_run']}")
