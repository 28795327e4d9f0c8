"""Starting the Serve app: locally in the foreground, or onto a running cluster.

    mlrt serve jobs/digits.yaml                    # local Ray + Serve, foreground, Ctrl-C stops
    mlrt serve models:/digits-mlp@champion --port 8080
    mlrt serve jobs/digits.yaml --smoke            # serve, one real prediction over HTTP, stop
    mlrt deploy jobs/digits.yaml --address auto    # onto a running cluster (or http://head:8265)
    mlrt serve jobs/a.yaml jobs/b.yaml             # several models, one port, a route each

The app itself is serve_apps/predictor.py; serve_apps/config.py describes it (`serve_config`)
for every path, with the HAProxy fast path on.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from runtime.errors import InputError
from serve_apps.config import (
    DEFAULT_PORT,
    FAST_PATH_ENV,
    Target,
    app_args,
    auth_env,
    check_auth_env,
    check_model,
    config_for,
    fast_path_enabled,
)

# On one machine, HAProxy's files and ports must not collide with another local Serve (tests,
# a benchmark, a second `mlrt serve`): each local instance gets its own.
_HAPROXY_FILES = {
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
    "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock",
}


def local_env(port: int) -> dict[str, str]:
    """Environment of a local Serve instance: the fast path with its own HAProxy files and
    ports, a short drain so that Ctrl-C stops in seconds, not the 30 s cluster default, and a
    patient proxy readiness check: Serve's 5 s, failed three times, kills the proxies of a
    laptop that is busy (a build, a test suite) while they import, and `mlrt serve` fails."""
    env = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
           "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30"}
    if not fast_path_enabled():
        return env
    base = Path(tempfile.gettempdir()) / f"mlrt-haproxy-{port}"
    base.mkdir(parents=True, exist_ok=True)
    env.update(FAST_PATH_ENV)
    for key, name in _HAPROXY_FILES.items():
        env[key] = str(base / name) if name else str(base)
    env["RAY_SERVE_HAPROXY_STATS_PORT"] = str(free_port())
    env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(free_port())
    return env


_ABOVE_RAY_WORKER_PORTS = 20000  # Ray's default min/max_worker_port: 10002-19999
_handed_out: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 that stays free until something binds it.

    Not one the kernel picks (port 0): that comes from the ephemeral range, which the many
    processes a Ray start spawns draw on for their own connections and listeners, so by the
    time HAProxy binds it another process may hold it (seen in CI). So: a random port between
    Ray's worker ports and the ephemeral range, checked free, never the same twice here."""
    low = _ABOVE_RAY_WORKER_PORTS
    try:
        high = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: the IANA ephemeral range
        high = 49152
    for _ in range(200 if high - low > 100 else 0):
        port = random.randrange(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # no room below the ephemeral range: the kernel's pick
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(target: Target, port: int, host: str = "127.0.0.1", address: str | None = None,
          wait: bool = True) -> str:
    """Deploy the app on the current (or a new local) Ray; return its URL (once healthy, unless
    `wait` is false: several apps then start side by side)."""
    return start_all([target], port, host, address, wait)[0]


def start_all(targets: Sequence[Target], port: int, host: str = "127.0.0.1",
              address: str | None = None, wait: bool = True) -> list[str]:
    """Several apps on one Serve (one port, a route each): Serve started once, the apps side by
    side; their URLs (once all are healthy, unless `wait` is false)."""
    from ray import serve

    from runtime.cluster.connect import init_ray
    from serve_apps.predictor import bind_app

    for target in targets:
        check_auth_env(target)
    env = local_env(port) if address is None else dict(FAST_PATH_ENV if fast_path_enabled()
                                                       else {})
    # a local Ray started now inherits them (its raylet passes them to every Serve actor); the
    # caller's environment is given back after, so a second start in the same process (or a
    # cluster it launches) does not inherit this app's HAProxy paths and stats port
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        init_ray(address)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    _start_serve(host, port, env)
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    urls = []
    for target in targets:
        app = bind_app(app_args(target), replica_env={**env, **auth_env(target)})
        serve.run(app, name=target.app_name, route_prefix=target.route, blocking=False)
        urls.append(base + target.route.rstrip("/"))
    for url in urls if wait else []:
        wait_healthy(url, 180)
    return urls


def _start_serve(host: str, port: int, env: dict[str, str]) -> None:
    """Serve's controller and proxies (a no-op when Serve already runs on this cluster). Access
    logs off: one log line per request costs more than a small model's prediction."""
    import logging

    from ray import serve

    from serve_apps.predictor import QUIET_LOGS

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    serve.start(http_options={"host": host, "port": port},
                controller_options={"runtime_env": {"env_vars": env}},
                logging_config=QUIET_LOGS)


def wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.3)
    raise InputError(f"the app at {url} did not become healthy in {timeout_s:.0f}s ({last})")


def stop() -> None:
    from ray import serve

    from runtime.cluster.connect import shutdown_ray

    serve.shutdown()
    shutdown_ray()


def run_foreground(targets: Sequence[Target], port: int, host: str,
                   echo: Callable[[str], None], smoke: bool = False) -> list[dict] | None:
    """`mlrt serve`: start, print the URLs, serve until Ctrl-C/SIGTERM (or one smoke request
    per app)."""
    for target in targets:
        check_model(target)
    done = threading.Event()
    previous: dict = {}
    try:
        urls = start_all(targets, port or free_port(), host)
        # after Ray started: its driver installs its own SIGTERM handler in ray.init
        previous = {s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGINT,
                                                                         signal.SIGTERM)}
        for target, url in zip(targets, urls, strict=True):
            echo(f"serving {target.model_uri} at {url}  (POST {url}/predict, GET "
                 f"{url}/metadata, {url}/docs)")
        if smoke:
            return [smoke_request(u, t) for t, u in zip(targets, urls, strict=True)]
        echo("Ctrl-C to stop")
        while not done.wait(0.5):
            pass
        return None
    finally:
        echo("stopping...")
        stop()
        for s, handler in previous.items():
            signal.signal(s, handler)


def smoke_request(url: str, target: Target) -> dict:
    """One real prediction over HTTP, with the curl command that does the same."""
    meta = _get_json(f"{url}/metadata", target)
    row = example_row(meta["input_schema"])
    body = json.dumps({"instances": [list(row.values())]})  # feature order: the short form
    headers = {"content-type": "application/json"}
    key_header = ""
    if target.serve.auth is not None:
        headers["authorization"] = f"Bearer {os.environ[target.serve.auth.api_key_env]}"
        key_header = f" -H \"Authorization: Bearer ${target.serve.auth.api_key_env}\""
    request = urllib.request.Request(f"{url}/predict", body.encode(), headers)
    with urllib.request.urlopen(request, timeout=30) as r:
        result = json.loads(r.read())
    curl = (f"curl -s -X POST {url}/predict -H 'content-type: application/json'{key_header} "
            f"-d '{body}'")
    return {"url": url, "curl": curl, "response": result}


def _get_json(url: str, target: Target) -> dict:
    headers = {}
    if target.serve.auth is not None:
        headers["authorization"] = f"Bearer {os.environ[target.serve.auth.api_key_env]}"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
        return json.loads(r.read())


def example_row(schema: list[dict]) -> dict:
    """A real row when the model was trained on a bundled scikit-learn set, else zeros."""
    names = [f["name"] for f in schema]
    from sklearn import datasets

    for loader in (datasets.load_digits, datasets.load_breast_cancer, datasets.load_wine,
                   datasets.load_iris, datasets.load_diabetes):
        frame = loader(as_frame=True).frame
        if list(frame.columns[:len(names)]) == names:
            return {n: float(frame[n].iloc[0]) for n in names}
    return {f["name"]: ("" if f["type"] == "categorical" else 0.0) for f in schema}


def deploy(targets: Sequence[Target], address: str, echo: Callable[[str], None],
           port: int = DEFAULT_PORT, host: str = "0.0.0.0") -> str:
    """`mlrt deploy`: onto a running cluster, one app per target. http(s):// addresses go
    through the dashboard's Serve REST API (`serve deploy` of one config holding every app,
    token passed by Ray's CLI: it replaces the apps Serve ran there); others (auto, ray://,
    host:port) through Ray's client, app by app. Either way the API keys (when auth is on)
    reach the replicas through their runtime_env, and a missing model fails before anything
    is sent."""
    for target in targets:
        check_auth_env(target)
        check_model(target)
    env = FAST_PATH_ENV if fast_path_enabled() else {}
    if address.startswith(("http://", "https://")):
        from runtime.cluster.auth import auth_token

        config = config_for(targets, port, env, with_secrets=True, host=host)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(config, f, sort_keys=False)
        serve_bin = str(Path(sys.executable).with_name("serve"))  # this venv's Ray
        try:
            result = subprocess.run([serve_bin, "deploy", f.name, "--address", address],
                                    capture_output=True, text=True, check=False,
                                    env={**os.environ, "RAY_AUTH_MODE": "token"}
                                    if auth_token() else None)
        finally:
            Path(f.name).unlink(missing_ok=True)
        if result.returncode != 0:
            raise InputError(f"serve deploy to {address} failed: {result.stderr.strip()[-2000:]}")
        for target in targets:
            echo(f"deployed {target.model_uri} as app '{target.app_name}' at route "
                 f"{target.route} (port {port})")
        echo(f"follow it: serve status --address {address}")
        return address
    start_all(targets, port, host, address, wait=False)
    for target in targets:
        echo(f"deployed {target.model_uri} as app '{target.app_name}' at route {target.route}")
    return address
