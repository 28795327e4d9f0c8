"""The platform stack for tests/platform: PostgreSQL-backed MLflow server, Ceph RGW, Ray head and
worker in containers (cluster/platform/stack.py).

    make platform && .venv/bin/python -m pytest tests/platform -q   # use a running stack
    MLRT_PLATFORM=1 .venv/bin/python -m pytest tests/platform -q    # start it, stop it at the end

A stack that is already up (.platform/env exists and every part answers) is used and left
running. Otherwise, with CI=true or MLRT_PLATFORM=1 the session starts one (`make platform`,
root and the Debian packages of .ci/run needed) and stops it at the end; without either, every
platform test is skipped with the reason and the command to start the stack.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLATFORM_DIR = REPO / ".platform"
STACK = REPO / "cluster" / "platform" / "stack.py"
ABSENT = ("platform stack absent (no .platform/env, or a part is not answering): start it with "
          "`make platform` (needs root), or set MLRT_PLATFORM=1 to let the tests start and stop it")


@dataclass(frozen=True)
class Platform:
    """What a test needs to reach the stack: .platform/env as a dict, and state.json."""

    env: dict
    state: dict

    @property
    def tracking_uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    @property
    def bucket(self) -> str:
        return self.state["bucket"]

    def process_env(self, **overrides: str) -> dict:
        """os.environ plus the stack's variables (for subprocesses run as a user would)."""
        return {**os.environ, **self.env, **overrides}


def read_env_file(path: Path) -> dict:
    """`export KEY=VALUE` lines (shell-quoted) as a dict."""
    values = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            values[key] = shlex.split(value)[0] if value else ""
    return values


def _stack_answers() -> bool:
    if not (PLATFORM_DIR / "env").exists():
        return False
    done = subprocess.run([sys.executable, str(STACK), "status", "--quiet"],
                          capture_output=True, check=False)
    return done.returncode == 0


def _may_start_stack() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("MLRT_PLATFORM") == "1"


@pytest.fixture(scope="session")
def stack(request):
    started = False
    if not _stack_answers():
        if not _may_start_stack():
            pytest.skip(ABSENT)
        # make installs the platform extra first. Its progress lines go to the terminal as they
        # come, not into pytest's capture: a first start takes minutes (debootstrap, image)
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            done = subprocess.run(["make", "platform"], cwd=REPO, check=False)
        if done.returncode != 0:
            pytest.fail(f"`make platform` failed (exit {done.returncode}): its last line names "
                        "the part and its log under .platform/logs")
        started = True
    yield Platform(env=read_env_file(PLATFORM_DIR / "env"),
                   state=json.loads((PLATFORM_DIR / "state.json").read_text()))
    if started:
        with request.config.pluginmanager.getplugin("capturemanager") \
                .global_and_fixture_disabled():
            subprocess.run(["make", "platform-down"], cwd=REPO, check=True)
