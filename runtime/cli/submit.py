"""`mlrt submit`: a spec run on a Ray cluster as a Ray job."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

from runtime.cli.options import SetOpt, SpecArg, echo, err, out


def submit(
    spec: SpecArg,
    set_: SetOpt = None,
    address: Annotated[str, typer.Option(
        help="The cluster's dashboard / job server, e.g. http://HEAD:8265 (default: "
             "RAY_API_SERVER_ADDRESS or RAY_ADDRESS).", show_default=False)] = "",
    wait: Annotated[bool, typer.Option(
        help="Stream the job's logs and exit with its status; --no-wait prints the job id and "
             "the commands to follow it.")] = True,
    working_dir: Annotated[Path | None, typer.Option(
        help="Folder uploaded as the job's working dir (default: the current directory); the "
             "spec must be inside it.", show_default=False)] = None,
    resume: Annotated[str | None, typer.Option(
        help="Continue the hyperparameter search of this MLflow run (its job died): passed to "
             "`mlrt run --resume` on the cluster; use the same spec and --set values.",
        show_default=False)] = None,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Run the spec's watcher (`mlrt watch SPEC`, the closed loop) on the "
                        "cluster as a long-running job instead of a run; returns once it is "
                        "running, with the commands to follow and stop it.")] = False,
    resource_check: Annotated[bool, typer.Option(
        help="Check the spec's CPUs/GPUs and storage against the cluster's current nodes "
             "(--no-resource-check for autoscaling clusters that grow on demand).")] = True,
) -> None:
    """Run a spec on a Ray cluster as a Ray job (uploads the working dir; preflight first).

    Exits 0 when the job SUCCEEDED, 1 when it FAILED (the job's error is shown), 2 when the job
    cannot run there (bad spec, upload too large, resources, local storage on many nodes).
    With --watch: exits 0 once the watcher runs, 1 when it failed to start.
    """
    from runtime.cluster.submit import JobFailed, follow_commands
    from runtime.cluster.submit import submit as submit_job
    from runtime.errors import InputError
    from runtime.spec import load_spec

    job = load_spec(spec, set_ or [])
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get(
        "RAY_ADDRESS", "")
    if not address:
        raise InputError("--address: give the cluster's job server, e.g. http://HEAD:8265")
    if watch and resume:
        raise InputError("--resume: continues a run's search; a watcher (--watch) starts its "
                         "own retrains")

    result = submit_job(job, spec, set_ or [], address, wait=wait, working_dir=working_dir,
                        check_resources=resource_check, resume=resume, watch=watch,
                        echo=echo)
    if watch and result.status not in ("SUCCEEDED", "FAILED", "STOPPED"):
        out().print(result.job_id)
        err().print(f"the watcher of {job.name} runs on the cluster (a cycle every "
                    f"{job.monitor.interval}); follow or stop it with:", markup=False)
        for command in follow_commands(result.job_id, address):
            err().print(f"  {command}", markup=False, soft_wrap=True)
        return
    if watch:
        raise JobFailed(f"watcher job {result.job_id} ended at its start ({result.status})"
                        + (f": {result.reason}" if result.reason else ""))
    if not wait:
        out().print(result.job_id)
        for command in follow_commands(result.job_id, address):
            err().print(f"  {command}", markup=False, soft_wrap=True)
        return
    if result.status != "SUCCEEDED":
        message = f"job {result.job_id} {result.status}: {result.reason}"
        if result.resume_run:  # the search is in `storage`: it continues where it stopped
            sets = [word for item in set_ or [] for word in ("--set", item)]
            again = shlex.join(["mlrt", "submit", str(spec), *sets, "--resume",
                                result.resume_run])
            message += f"\n  continue its search with: {again}"
        raise JobFailed(message)
    out().print(f"job {result.job_id} SUCCEEDED")
