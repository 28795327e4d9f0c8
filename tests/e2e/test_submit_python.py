"""End to end: `mlrt submit` to a head started as a new user starts one, from the venv without
activating it (`.venv/bin/ray start --head`): the raylet's PATH has no venv, so a job whose
entrypoint is a bare `python` gets another interpreter (or none) and fails with
`ModuleNotFoundError: No module named 'typer'`. mlrt submits with the interpreter Ray's own
workers run (the raylet's --python_worker_command), so the job runs.

The head gets free ports and its own temp dir, and is stopped by pid: the processes whose
command line names its temp dir, and their children (never `ray stop`: other Rays share
this machine).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from user import MLRT, user_dir  # tests/e2e/user.py

from serve_apps.local import free_port

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


def _path_without_venv() -> str:
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and Path(p).resolve() != BIN.resolve())


@pytest.fixture(scope="module")
def bare_head():
    temp_dir = tempfile.mkdtemp(prefix="mlrt-rayh-", dir="/tmp")  # short: socket paths
    token = secrets.token_hex(16)
    dashboard = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "MLFLOW_", "VIRTUAL_ENV"))}
    env.update(PATH=_path_without_venv(), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    started = subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--port", str(free_port()),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
         "--ray-client-server-port", str(free_port()),
         "--dashboard-agent-listen-port", str(free_port()), "--num-cpus", "2",
         "--temp-dir", temp_dir, "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180, check=False)
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        yield {"address": f"http://127.0.0.1:{dashboard}", "token": token}
    finally:
        _stop(temp_dir)


def _stop(temp_dir: str) -> None:
    roots = [p for p in psutil.process_iter(["cmdline"])
             if temp_dir in " ".join(p.info["cmdline"] or [])]
    procs = {}
    for root in roots:
        with contextlib.suppress(psutil.Error):
            procs.update({p.pid: p for p in [root, *root.children(recursive=True)]})
    for proc in procs.values():
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(list(procs.values()), timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_submit_runs_with_the_workers_interpreter_not_the_first_python_on_path(
        bare_head, tmp_path_factory):
    project = user_dir(tmp_path_factory, "bare-head")
    store = project / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    result = subprocess.run(
        [MLRT, "submit", "jobs/digits.yaml", "--address", bare_head["address"],
         "--set", f"storage={store}", "--set", "train.epochs=2", "--set", "train.workers=1",
         "--set", "evaluate.gate.min=0.5"],
        cwd=project, env={**env, "RAY_AUTH_TOKEN": bare_head["token"]}, capture_output=True,
        text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    assert "No module named" not in output, output[-4000:]
    assert result.returncode == 0, output[-4000:]
    # Ray logs the entrypoint it ran: the venv's interpreter, by its absolute path
    ran = re.search(r"Running entrypoint for job \S+: (\S+) -m runtime run jobs/digits.yaml",
                    output)
    assert ran, output[-4000:]
    assert Path(ran.group(1)).parent == BIN and Path(ran.group(1)).name.startswith("python")
    assert (store / "mlflow.db").exists()
