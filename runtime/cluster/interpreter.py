"""The Python a cluster's Ray workers run, so that a submitted job runs with it too.

Ray runs a job's entrypoint through a shell, so a bare `python` is whatever comes first on
the raylet's PATH: for a head started from a venv without activating it
(`.venv/bin/ray start --head`) that is the system Python, and every job fails with
`ModuleNotFoundError: No module named 'typer'`, while Ray's own workers run the venv's
interpreter. The raylet is started with that interpreter in its command line
(`--python_worker_command=/path/to/python .../default_worker.py ...`), and the dashboard
reports each node's raylet command line (`GET /nodes?view=summary`), so mlrt reads it from
there and puts the absolute path in the entrypoint.
"""

from __future__ import annotations

import json
import shlex
import urllib.error
import urllib.request

WORKER_COMMAND_FLAG = "--python_worker_command="


def worker_python(address: str, headers: dict[str, str], timeout: float = 10.0) -> str | None:
    """The interpreter of the head node's Ray workers (where a job's driver runs), or None when
    the dashboard does not report it (no reporter agent, an older Ray): the caller then keeps
    `python` from PATH."""
    request = urllib.request.Request(f"{address.rstrip('/')}/nodes?view=summary",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    nodes = (body.get("data") or {}).get("summary") or []
    heads = [n for n in nodes if (n.get("raylet") or {}).get("isHeadNode")] or nodes
    for node in heads:
        found = python_from_cmdline(node.get("cmdline") or
                                    (node.get("raylet") or {}).get("cmdline") or [])
        if found:
            return found
    return None


def python_from_cmdline(cmdline: list[str]) -> str | None:
    """The interpreter in a raylet's `--python_worker_command=...` (shell-quoted: Ray builds
    it with list2cmdline), or None."""
    for arg in cmdline:
        if arg.startswith(WORKER_COMMAND_FLAG):
            try:
                words = shlex.split(arg.removeprefix(WORKER_COMMAND_FLAG))
            except ValueError:
                return None
            return words[0] if words and "python" in words[0].rsplit("/", 1)[-1] else None
    return None
