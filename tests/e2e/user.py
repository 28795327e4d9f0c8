"""What every e2e test does as a user: run the installed `mlrt` in a directory of its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
MLRT = str(Path(sys.executable).with_name("mlrt"))


def mlrt(*args: str, cwd: Path, timeout: float = 600,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The CLI in a fresh process. mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: an
    earlier test in this session would otherwise point the CLI at its own store."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "RAY_ADDRESS")}
    return subprocess.run([MLRT, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False, env={**base, **(env or {})})


def user_dir(tmp_path_factory, name: str) -> Path:
    """A temp project with the shipped jobs/, as a user's clone would have."""
    work = tmp_path_factory.mktemp(name)
    shutil.copytree(ROOT / "jobs", work / "jobs")
    return work
