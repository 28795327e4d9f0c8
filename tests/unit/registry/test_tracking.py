"""registry.tracking: stale runs proven dead are ended; MLflow's per-version notices dropped."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys

import mlflow

from runtime.registry import tracking


def test_only_runs_whose_driver_provably_died_are_marked_killed(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # use_store sets it; restored afterwards
    tracking.use_store(str(tmp_path))
    experiment = tracking.experiment_id("stale", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = socket.gethostname()
    here = tracking.driver_id(int(dead)).rsplit(":", 1)[0]
    assert here.startswith(f"{host}:") and not here.endswith(":?")
    client = mlflow.MlflowClient()
    # a container on the host network has this host's name but its own pid namespace: its
    # pid means nothing here. An old host:pid tag cannot say which namespace it came from.
    tags = {"dead": f"{here}:{dead}", "alive": f"{here}:{os.getpid()}",
            "elsewhere": f"other-host-{host}:{here.split(':')[1]}:{dead}",
            "container": f"{host}:4026530000:{dead}", "old-format": f"{host}:{dead}",
            "untagged": ""}
    runs = {name: client.create_run(experiment, tags={tracking.DRIVER_TAG: tag}).info.run_id
            for name, tag in tags.items()}
    assert tracking.end_stale_runs(experiment) == [runs["dead"]]
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {"dead": "KILLED", "alive": "RUNNING", "elsewhere": "RUNNING",
                      "container": "RUNNING", "old-format": "RUNNING", "untagged": "RUNNING"}


def test_registry_notices_are_dropped_whole_lines_only():
    out = io.StringIO()
    stream = tracking._DropLines(out, tracking._REGISTRY_NOTICES)
    for piece in ("Successfully registered model 'm'.", "\n", "a real error\n",
                  "Created version '3' of model 'm'.\n", "trailing"):
        stream.write(piece)
    stream.close_pending()
    assert out.getvalue() == "a real error\ntrailing"
