"""The `mlrt` command: thin commands over the runtime packages, one module per command group.

    mlrt validate jobs/digits.yaml
    mlrt run jobs/digits.yaml --set train.epochs=5
    mlrt models list digits-mlp
    mlrt models promote digits-mlp 3 --reason "beats v2 on the new data"
    mlrt audit digits-mlp --verify
    mlrt predict models:/digits-mlp@champion --input rows.parquet --output predictions
    mlrt submit jobs/digits.yaml --address http://HEAD:8265
    mlrt serve jobs/digits.yaml                    # HTTP, foreground; deploy / render: see below
    mlrt monitor jobs/digits.yaml --since 1h --report monitor.html --json
    mlrt watch jobs/digits.yaml --once --trigger manual   # the closed loop, one cycle
    mlrt submit jobs/digits.yaml --watch --address http://HEAD:8265   # the loop on a cluster

Exit codes: 0 ok; 1 the job ran and failed (data checks, gate, training); 2 bad input.
"""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.markup import escape

from runtime.cli import audit, models, monitor, predict, run, serve, submit, watch
from runtime.cli.options import err
from runtime.errors import MlrtError


def build_app() -> typer.Typer:
    """The typer app with every command; each command imports what it needs when it runs."""
    app = typer.Typer(
        help="mlrt: one YAML job spec -> data, preprocessing, Ray Train, gate, MLflow registry.",
        no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    )
    app.command()(run.validate)
    app.command("spec-schema")(run.spec_schema)
    app.command()(run.run)
    app.command()(predict.predict)
    models_app = typer.Typer(help="Registered model versions, aliases, promote, rollback, "
                                  "approval and model cards.", no_args_is_help=True)
    models_app.command("list")(models.models_list)
    models_app.command("show")(models.models_show)
    models_app.command("promote")(models.models_promote)
    models_app.command("rollback")(models.models_rollback)
    models_app.command("approve")(models.models_approve)
    models_app.command("reject")(models.models_reject)
    models_app.command("card")(models.models_card)
    app.add_typer(models_app, name="models")
    app.command("audit")(audit.audit_cmd)
    app.command()(submit.submit)
    app.command("serve")(serve.serve_cmd)
    app.command()(serve.deploy)
    app.command()(serve.render)
    app.command("monitor")(monitor.monitor_cmd)
    app.command()(watch.watch)
    return app


# What the libraries print on every run that a user cannot act on; set the variable yourself
# to see it again. MLflow's INFO lines (database set-up) and its download progress bars.
QUIET_ENV = {"MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def main() -> None:
    logging.basicConfig(level=os.environ.get("MLRT_LOG_LEVEL", "WARNING"),
                        format="%(levelname)s %(name)s: %(message)s")
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    _exit(_run_app())


def _run_app() -> int:
    """Run the typer app and map every outcome to an exit code, in one place."""
    try:
        build_app()()  # usage errors (unknown option, missing argument) print and exit 2 here
    except MlrtError as e:
        # the message is text, never markup: a path like `[/tmp/x.cfg:45]` in an error from
        # HAProxy or Ray once crashed this line with rich's MarkupError instead of printing it
        err().print(f"[red]error[/]: {escape(str(e))}", soft_wrap=True)
        return e.exit_code
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def _exit(code: int) -> None:
    """Exit without the interpreter's slow teardown (~2.5 s of C-level finalizers once torch and
    Ray were loaded). Ray is already shut down and MLflow runs are closed by then."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
