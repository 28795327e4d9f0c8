"""`mlrt validate`, `mlrt spec-schema` and `mlrt run`: a spec checked, described, or run end
to end."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
import yaml
from rich.table import Table

from runtime.cli.options import ActorOpt, SetOpt, SpecArg, echo, err, out


def validate(spec: SpecArg, set_: SetOpt = None) -> None:
    """Check a spec without running it: print the resolved spec, or every error (exit 2)."""
    from runtime.spec import load_spec

    job = load_spec(spec, set_ or [])
    out().print(yaml.safe_dump(job.model_dump(mode="json", exclude_none=True), sort_keys=False),
              end="")
    err().print(f"[green]ok[/]: {spec} is a valid job spec (hash {job.spec_hash()})")


def spec_schema() -> None:
    """Print the job spec's JSON Schema (for editor completion and validation)."""
    from runtime.spec import json_schema

    print(json.dumps(json_schema(), indent=2))


def run(
    spec: SpecArg,
    set_: SetOpt = None,
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join (e.g. ray://head:10001 or auto). Default: start a local Ray, "
             "or join RAY_ADDRESS when set (as inside `ray job submit`).",
        show_default=False)] = None,
    resume: Annotated[str | None, typer.Option(
        help="Continue the hyperparameter search of this MLflow run (its driver died): "
             "finished trials are kept, unfinished ones resume from their checkpoints. "
             "Use the same spec and --set values.",
        show_default=False)] = None,
    actor: ActorOpt = None,
) -> None:
    """Run a job spec end to end: data, preprocess, train (or tune), evaluate, register.

    Exits 0 when the model passed its gate and the alias moved, 1 when the job ran and failed
    (data checks, training, gate), 2 for a bad spec or arguments.
    """
    from runtime.spec import load_spec

    job = load_spec(spec, set_ or [])  # a bad spec fails here, before Ray starts
    err().print(f"mlrt: running {job.name} ({spec})")
    from runtime.cluster.connect import shutdown_ray
    from runtime.errors import GateFailed
    from runtime.pipeline.driver import run_job

    try:
        summary = run_job(job, address=address, echo=echo, resume=resume, actor=actor)
    except GateFailed as e:
        if e.summary is not None:
            _print_summary(e.summary)
        raise
    finally:
        start = time.perf_counter()
        shutdown_ray()
        echo(f"[shutdown] done in {time.perf_counter() - start:.1f}s")
    _print_summary(summary)


def _print_summary(summary) -> None:
    table = Table(title="mlrt run summary", show_header=False, title_justify="left")
    table.add_row("run id", summary.run_id)
    table.add_row("model", f"{summary.model_name} v{summary.version}")
    for name, value in summary.metrics.items():
        table.add_row(name, f"{value:.4f}")
    verdict = "[green]passed[/]" if summary.verdict.passed else "[red]failed[/]"
    table.add_row("gate", f"{verdict}: {summary.verdict.reason}")
    if summary.alias_moved:
        before = f" (was v{summary.alias_moved_from})" if summary.alias_moved_from else ""
        table.add_row("alias", f"@{summary.alias} -> v{summary.version}{before}")
    else:
        table.add_row("alias", f"@{summary.alias} not moved")
    table.add_row("stages", ", ".join(f"{k} {v:.1f}s" for k, v in summary.timings.items())
                  + f"; total {sum(summary.timings.values()):.1f}s")
    if summary.best_trial:
        table.add_row("tuning", f"best of {summary.trials} trials: {summary.best_trial} "
                                "(its checkpoint was evaluated and registered)")
    if summary.restarts:
        table.add_row("restarts", f"{summary.restarts} (resumed from checkpoint)")
    from runtime.registry.tracking import ui_command

    table.add_row("MLflow UI", ui_command(summary.tracking_uri))
    table.add_row("load it", f'mlflow.pyfunc.load_model("models:/{summary.model_name}'
                             f'@{summary.alias}")')
    out().print(table)
