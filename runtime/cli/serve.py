"""`mlrt serve`, `mlrt deploy` and `mlrt render`: the Serve app (serve_apps) started locally,
deployed onto a cluster, or rendered for another tool.

serve_apps imports runtime, never the reverse: these commands load it by name when they run
(`_serve_apps`), so the rest of the CLI never imports the Serve app.
"""

from __future__ import annotations

import importlib
import json
import os
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer
import yaml

from runtime.cli.options import ActorOpt, SetOpt, StorageOpt, echo, err, out


def _serve_apps(module: str) -> ModuleType:
    """`serve_apps.<module>`, imported when a serving command runs."""
    return importlib.import_module(f"serve_apps.{module}")


ServeArgs = Annotated[list[str], typer.Argument(
    help="Job spec YAMLs (each: its serve section and models:/NAME@ALIAS) or model URIs "
         "(models:/NAME@ALIAS or models:/NAME/VERSION); several: one app each, on one port, "
         "each on its own route.", show_default=False)]
SpecsArg = Annotated[list[Path], typer.Argument(
    help="Job spec YAML files, e.g. jobs/digits.yaml; several: one Serve app each.",
    show_default=False)]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="Serve this URI instead of the spec's models:/NAME@<register.alias> "
                    "(one spec only).", show_default=False)]


def serve_cmd(
    targets: ServeArgs,
    set_: SetOpt = None,
    model: ModelOpt = None,
    port: Annotated[int, typer.Option(help="HTTP port (0: any free port).", min=0,
                                      max=65535)] = 8000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    storage: StorageOpt = ".mlrt",
    smoke: Annotated[bool, typer.Option(
        help="Serve, fetch one real prediction over HTTP, print it with its curl, stop.")] = False,
    actor: ActorOpt = None,
) -> None:
    """Serve registered models over HTTP on a local Ray, in the foreground (Ctrl-C stops).

    Under each spec's route: POST /predict, GET /health, /metadata, /docs, and MLflow's
    /invocations, the Open Inference Protocol (/v2/...) and KServe v1 (/v1/models/...).
    Each app follows its alias: promote, rollback or a passing run switch versions with no
    failed request. Several specs: one app each on the same port; routes must not clash.
    Audited: a "served" event (version, URL) per model before it serves, "serve_stopped"
    after.
    """
    from runtime.governance import audit

    config, local = _serve_apps("config"), _serve_apps("local")
    tgts = config.targets_for(targets, storage, set_ or [], model)
    versions = [config.check_model(t) for t in tgts]  # a missing model exits 2 here
    port = port or local.free_port()
    wheres = [{"model_uri": t.model_uri, "url": f"http://{host}:{port}{t.route.rstrip('/')}"}
              for t in tgts]
    with ExitStack() as events:  # each model's "served" event, "failed" too if serving fails
        for t, version, where in zip(tgts, versions, wheres, strict=True):
            events.enter_context(audit.recorded(t.storage, _model_name(t.model_uri),
                                                audit.SERVED, actor, None, version=version,
                                                **where))
        results = local.run_foreground(tgts, port, host, echo, smoke=smoke)
    for t, where in zip(tgts, wheres, strict=True):
        audit.record_event(t.storage, _model_name(t.model_uri), audit.SERVE_STOPPED, actor,
                           None, **where)
    for result in results or []:
        out().print(f"$ {result['curl']}", markup=False, soft_wrap=True)
        out().print(json.dumps(result["response"]), markup=False, soft_wrap=True)


def deploy(
    specs: SpecsArg,
    address: Annotated[str, typer.Option(
        help="Cluster: auto, ray://head:10001, or the dashboard http://head:8265 (serve deploy).",
        show_default=False)],
    set_: SetOpt = None,
    model: ModelOpt = None,
    port: Annotated[int, typer.Option(
        help="Serve's HTTP port on the cluster (when this starts Serve there).", min=1,
        max=65535)] = 8000,
    host: Annotated[str, typer.Option(
        help="Address Serve's HTTP proxies bind on each node (when this starts Serve there): "
             "all interfaces by default; 127.0.0.1 keeps a one-machine cluster private.")
    ] = "0.0.0.0",
    actor: ActorOpt = None,
) -> None:
    """Deploy specs' models as Ray Serve apps (one each) onto a running Ray cluster.

    Each app serves POST {route}/predict (and the other protocols) on every node's port;
    check them with `serve status --address URL`. With an http:// address the token
    (RAY_AUTH_TOKEN or ~/.ray/auth_token) is sent to the dashboard, and the config sent holds
    every app given (Serve's declarative deploy replaces the apps it ran). Audited: a
    "deployed" event (version, address, route) per model before the deploy, a "failed" one if
    it fails."""
    from runtime.cluster.connect import shutdown_ray
    from runtime.governance import audit

    config, local = _serve_apps("config"), _serve_apps("local")
    tgts = config.targets_for([str(s) for s in specs], overrides=set_ or [], model_uri=model)
    for t in tgts:  # an unset API key env, then a missing model, exit 2 before any event
        config.check_auth_env(t)
    versions = [config.check_model(t) for t in tgts]
    try:
        with ExitStack() as events:
            for t, version in zip(tgts, versions, strict=True):
                events.enter_context(audit.recorded(
                    t.storage, _model_name(t.model_uri), audit.DEPLOYED, actor, None,
                    version=version, model_uri=t.model_uri, address=address, route=t.route,
                    port=port))
            local.deploy(tgts, address, lambda line: err().print(line, markup=False), port,
                         host)
    finally:
        shutdown_ray()


def _model_name(model_uri: str) -> str:
    from runtime.registry.uris import parse_model_uri

    return parse_model_uri(model_uri)[0]


def _render_serve(jobs: list, spec_paths: list[Path], overrides: list[str]) -> str:
    return _serve_apps("config").render_serve(*jobs, sources=[str(p) for p in spec_paths])


def _render_rayjob(jobs: list, spec_paths: list[Path], overrides: list[str]) -> str:
    from runtime.cluster.kuberay import render_rayjob
    from runtime.errors import InputError

    if len(jobs) != 1:
        raise InputError(f"--target rayjob: renders the job of one spec, got {len(jobs)}")
    return _manifest("RayJob: kubectl apply -f <this file>",
                     render_rayjob(jobs[0], spec_paths[0], overrides))


def _render_rayservice(jobs: list, spec_paths: list[Path], overrides: list[str]) -> str:
    """One RayService serving every spec's model, on the cluster of the first spec."""
    from runtime.cluster.kuberay import render_rayservice

    serve = _serve_apps("config").serve_config(*jobs, sources=[str(p) for p in spec_paths])
    return _manifest("RayService: kubectl apply -f <this file>",
                     render_rayservice(jobs[0], serve))


def _render_watch(jobs: list, spec_paths: list[Path], overrides: list[str]) -> str:
    """A CronJob running one `mlrt watch --once` cycle per monitor.interval against the
    cluster of `--target rayservice` for the same spec."""
    from runtime.cluster.kuberay import render_watch_cronjob, token_secret
    from runtime.cluster.preflight import watch_problems
    from runtime.errors import InputError

    if len(jobs) != 1:
        raise InputError(f"--target watch: renders the watcher of one spec, got {len(jobs)}")
    problems = watch_problems(jobs[0], pods=True)
    if problems:
        raise InputError("the watcher cannot run in a CronJob as specified:\n"
                         + "\n".join(f"  {p}" for p in problems))
    return _manifest(f"CronJob: first kubectl create secret generic {token_secret(jobs[0])} "
                     "--from-literal=token=THE_CLUSTER_TOKEN; then kubectl apply -f <this "
                     "file>", render_watch_cronjob(jobs[0], spec_paths[0], overrides))


def _manifest(header: str, manifest: dict) -> str:
    class Dumper(yaml.SafeDumper):
        """Multi-line strings (the RayService's serveConfigV2) as readable `|` blocks."""

    def text(dumper, value: str):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    kind = "Kubernetes" if manifest.get("apiVersion") == "batch/v1" else "KubeRay"
    return (f"# {kind} {header}\n# rendered by `mlrt render`; the image is the spec's "
            f"cluster.image\n" + yaml.dump(manifest, Dumper=Dumper, sort_keys=False))


# target -> renderer(specs, spec paths, --set overrides) -> text
RENDERERS = {"serve": _render_serve, "rayjob": _render_rayjob, "rayservice": _render_rayservice,
             "watch": _render_watch}
NEXT_STEP = {"serve": "serve run {0}  |  serve deploy {0} --address http://HEAD:8265",
             "rayjob": "kubectl apply -f {0}", "rayservice": "kubectl apply -f {0}",
             "watch": "kubectl apply -f {0}"}


def render(
    specs: SpecsArg,
    target: Annotated[str, typer.Option(
        help="serve: a Ray Serve config for `serve run` / `serve deploy`; rayjob: a KubeRay "
             "RayJob running `mlrt run SPEC`; rayservice: a KubeRay RayService serving the "
             "specs' models (on the first spec's cluster); watch: a Kubernetes CronJob "
             "running `mlrt watch SPEC --once` every monitor.interval against that "
             "cluster.")] = "serve",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="File to write (default: stdout).", show_default=False)] = None,
    set_: SetOpt = None,
) -> None:
    """Render specs for another tool: a Serve config (one app per spec), KubeRay manifests
    (ray.io/v1) or the watcher's CronJob (batch/v1)."""
    from runtime.errors import InputError
    from runtime.spec import load_spec

    if target not in RENDERERS:
        raise InputError(f"--target: unknown target '{target}' (choose from "
                         f"{', '.join(RENDERERS)})")
    jobs = [load_spec(spec, set_ or []) for spec in specs]
    text = RENDERERS[target](jobs, specs, set_ or [])
    local = sorted({job.storage for job in jobs if "://" not in job.storage})
    if target != "serve" and local and not os.environ.get("MLFLOW_TRACKING_URI"):
        err().print(f"warning: storage '{', '.join(local)}' is a local path: inside the pods it "
                    "is not shared and is lost with them. Set storage to s3://... or gs://... "
                    "(or MLFLOW_TRACKING_URI to a tracking server) before applying.",
                    markup=False)
    if output is None:
        print(text, end="")
    else:
        output.write_text(text)
        err().print(f"wrote {output} (next: {NEXT_STEP[target].format(output)})", markup=False)
