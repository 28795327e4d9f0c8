"""What every e2e test does as a user: run the installed `mlrt` in a directory of its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).parents[2]
MLRT = str(Path(sys.executable).with_name("mlrt"))
# a fast model for the serve tests (jobs/breast_cancer.yaml trains a HistGradientBoosting)
LOGREG = ["--set", "model.estimator=sklearn.linear_model.LogisticRegression",
          "--set", "model.params={max_iter: 300}"]


def mlrt(*args: str, cwd: Path, timeout: float = 600,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The CLI in a fresh process. mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: an
    earlier test in this session would otherwise point the CLI at its own store."""
    return subprocess.run([MLRT, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False, env=mlrt_env(env))


def mlrt_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the MLflow/Ray addresses a test may have set."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "RAY_ADDRESS")}
    return {**base, **(extra or {})}


def user_dir(tmp_path_factory, name: str) -> Path:
    """A temp project with the shipped jobs/, as a user's clone would have."""
    work = tmp_path_factory.mktemp(name)
    shutil.copytree(ROOT / "jobs", work / "jobs")
    return work


def wait_for_urls(proc: subprocess.Popen, count: int, timeout_s: float) -> list[str]:
    """The URLs `mlrt serve` prints (one line per app); stderr keeps being drained so that the
    server never blocks on a full pipe."""
    seen: list[str] = []
    found = threading.Event()

    def serving() -> list[str]:
        return [line.split(" at ", 1)[1].split()[0] for line in list(seen)
                if line.startswith("serving ") and " at http" in line]

    def drain() -> None:
        for line in proc.stderr:
            seen.append(line)
            if len(serving()) >= count:
                found.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not found.wait(0.5) and proc.poll() is None and time.monotonic() < deadline:
        pass
    urls = serving()
    if len(urls) < count:
        raise AssertionError("mlrt serve printed no URL:\n" + "".join(seen[-40:]))
    return urls
