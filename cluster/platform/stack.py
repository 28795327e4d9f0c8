"""The platform stack on this one machine: PostgreSQL 15, Ceph RGW (S3), an MLflow tracking
server on them, a private dockerd, the mlrt image and a Ray head + worker in containers.

    make platform                                 # = .venv/bin/python cluster/platform/stack.py up
    . .platform/env                               # MLFLOW_TRACKING_URI, AWS_*, RAY_ADDRESS, ...
    .venv/bin/mlrt submit jobs/digits.yaml --address "$RAY_ADDRESS" \\
        --set storage="$MLRT_PLATFORM_STORAGE"
    python3 cluster/platform/stack.py status      # exit 0 when every part answers
    make platform-down                            # = python3 cluster/platform/stack.py down

`up` options: `--s3 moto` (skip Ceph: moto's server, no signature checks), `--base IMAGE`
(build the image on a registry image you can pull, e.g. rayproject/ray:2.60.0-py311, instead of
the offline debootstrap base), `--cpus N` (logical CPUs per Ray node).

Everything binds 127.0.0.1, on ports chosen free; every process and container is recorded in
.platform/state.json (pid + start time) and `down` stops exactly those: never `ray stop`,
`pkill` or `killall`, other work shares this machine. The first `up` on a machine runs
debootstrap and a cold image build (minutes); both are cached under .platform/ afterwards
(`down` keeps them; `python3 cluster/platform/stack.py clean` removes everything).

Stdlib only, so `down` works with any python3, even without the venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import containers
import storage
from procs import (
    PartError,
    free_port,
    is_running,
    start_process,
    start_time,
    stop_process,
    wait_until,
)
from state import (
    BASE,
    BUCKET,
    ENV_FILE,
    REPO,
    STATE,
    VENV_BIN,
    load_state,
    new_state,
    ray_address,
    ray_env,
    reset_run_dirs,
    s3_env,
    save_state,
    write_env,
)


def say(message: str) -> None:
    print(f"[platform] {message}", flush=True)


# --- up ---------------------------------------------------------------------------------------


def timed(state: dict, part: str, start: Callable[[], str]) -> None:
    """Run one part's start, print its line with the seconds it took."""
    say(f"{part} ...")
    began = time.monotonic()
    detail = start()
    seconds = time.monotonic() - began
    state["timings"][part] = round(seconds, 1)
    save_state(state)
    say(f"{part}: {detail} ({seconds:.1f} s)")


def start_postgres(state: dict) -> str:
    record, facts = storage.start_postgres(BASE, state["secrets"]["postgres"])
    state["processes"].append(record)
    state["ports"]["postgres"] = facts["port"]
    state["postgres_url"] = facts["url"]
    return f"127.0.0.1:{facts['port']}, database mlflow"


def start_s3(state: dict, kind: str) -> str:
    keys = state["secrets"]
    if kind == "ceph":
        try:
            records, facts = storage.start_ceph(BASE, keys["access_key"], keys["secret_key"],
                                                BUCKET)
        except PartError as exc:
            for record in reversed(getattr(exc, "started", [])):
                stop_process(record)
            say("!" * 78)
            say(f"Ceph RGW COULD NOT START: {exc}")
            say("FALLING BACK TO moto's S3 server: it accepts ANY key (no signature checks)")
            say("!" * 78)
            kind = "moto"
        else:
            state["processes"].extend(records)
    if kind == "moto":
        records, facts = storage.start_moto(BASE, VENV_BIN, keys["access_key"],
                                            keys["secret_key"], BUCKET)
        state["processes"].extend(records)
    state["s3"] = {"kind": facts["kind"], "endpoint": facts["endpoint"]}
    state["ports"]["s3"] = facts["port"]
    return f"{facts['kind']} at {facts['endpoint']}, bucket {BUCKET}"


def start_mlflow(state: dict) -> str:
    part, log = "mlflow", BASE / "logs" / "mlflow.log"
    mlflow = VENV_BIN / "mlflow"
    if not mlflow.exists():
        raise PartError(part, f"{mlflow} not found: run `make platform` (it makes the venv)")
    port = free_port()
    env = {**os.environ, **s3_env(state),
           # the database URL holds the password: an env var, not a command-line argument
           "MLFLOW_BACKEND_STORE_URI": state["postgres_url"],
           # otherwise MLflow also starts a job runner with 7 worker processes
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    record = start_process(part, [str(mlflow), "server", "--host", "127.0.0.1", "--port",
                                  str(port), "--workers", "1", "--artifacts-destination",
                                  f"s3://{BUCKET}/mlflow"],
                           log, env=env, group=True)  # uvicorn children die with it
    state["processes"].append(record)
    state["ports"]["mlflow"] = port
    save_state(state)
    url = f"http://127.0.0.1:{port}"
    wait_until(part, lambda: _http_ok(url + "/health"), 180, "answering /health", log, record)
    return f"{url} (PostgreSQL store, artifacts s3://{BUCKET}/mlflow)"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_dockerd(state: dict) -> str:
    record, facts = containers.start_dockerd(BASE)
    state["processes"].append(record)
    state["docker_host"] = facts["host"]
    _record_containerd(state, facts["containerd_pidfile"], before=record)
    return facts["host"]


def _record_containerd(state: dict, pidfile: str, before: dict) -> None:
    """dockerd's own containerd, listed *before* dockerd: `down` goes in reverse, so dockerd
    (which would restart a containerd that died) stops first and takes containerd with it;
    the record only catches a containerd left behind."""
    try:
        pid = int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return
    record = {"part": "containerd", "pid": pid, "start_time": start_time(pid), "log": None,
              "stop_signal": "SIGTERM", "group": False}
    state["processes"].insert(state["processes"].index(before), record)


def build_images(state: dict, base_image: str | None) -> str:
    host = state["docker_host"]
    if base_image is None:
        base_image = containers.BASE_IMAGE
        began = time.monotonic()
        how = containers.ensure_base_image(BASE, host)
        state["timings"]["base-image"] = round(time.monotonic() - began, 1)
        say(f"base image {base_image}: {how} ({time.monotonic() - began:.1f} s)")
    extras = containers.prepare_build_extras(REPO, VENV_BIN / "python")
    if not any(name.startswith("torch-") for name in extras):
        say("WARNING: no torch CPU wheel in pip's find-links: the build fetches torch from "
            "the Dockerfile's TORCH_INDEX")
    containers.build_image(REPO, BASE, host, base_image)
    return f"{containers.IMAGE} on {base_image} (build-extras: {', '.join(extras) or 'none'})"


def start_ray(state: dict, cpus: int) -> str:
    host, env = state["docker_host"], ray_env(state)
    head_ports, worker_ports = containers.node_ports(head=True), containers.node_ports(head=False)
    state["ports"].update({"ray_gcs": head_ports["port"],
                           "ray_dashboard": head_ports["dashboard-port"]})
    sizes = {"num_cpus": cpus, "object_store_bytes": 512 * 1024**2, "memory": "6g"}
    head = containers.start_ray_node(BASE, host, containers.HEAD, head_ports, env, **sizes)
    state["containers"].append(head)
    save_state(state)
    dashboard, token = ray_address(state), state["secrets"]["ray_token"]
    containers.wait_for_ray("ray-head", lambda: containers.ray_nodes_alive(dashboard, token) >= 1,
                            180, "reporting itself alive", host, head, BASE)
    worker = containers.start_ray_node(BASE, host, containers.WORKER, worker_ports, env,
                                       gcs_port=head_ports["port"], **sizes)
    state["containers"].append(worker)
    save_state(state)
    containers.wait_for_ray("ray-worker",
                            lambda: containers.ray_nodes_alive(dashboard, token) >= 2, 180,
                            "joined the head", host, worker, BASE)
    return f"2 nodes x {cpus} CPUs, job server {dashboard} (token auth)"


def up(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise SystemExit("[platform] run as root: PostgreSQL runs as `postgres`, dockerd as root")
    previous = load_state()
    if previous is not None:
        if not failing_parts(previous):
            say(f"already up ({ENV_FILE}); `make platform-down` to stop it")
            return 0
        say("a previous stack is partly running: stopping it first")
        stop_stack(previous)
    reset_run_dirs()
    state = new_state()
    save_state(state)
    began = time.monotonic()
    try:
        timed(state, "postgres", lambda: start_postgres(state))
        timed(state, "s3", lambda: start_s3(state, args.s3))
        timed(state, "mlflow", lambda: start_mlflow(state))
        timed(state, "dockerd", lambda: start_dockerd(state))
        timed(state, "image", lambda: build_images(state, args.base))
        timed(state, "ray", lambda: start_ray(state, args.cpus))
    except PartError as exc:
        say(f"FAILED: {exc}")
        say("stopping what was already started")
        stop_stack(state)
        return 1
    except KeyboardInterrupt:
        say("interrupted: stopping what was already started")
        stop_stack(state)
        return 130
    write_env(state)
    state["timings"]["total"] = round(time.monotonic() - began, 1)
    save_state(state)
    say(f"up in {time.monotonic() - began:.0f} s: `. {ENV_FILE.relative_to(REPO)}` to use it")
    if state["s3"]["kind"] != "ceph":
        say(f"NOTE: S3 is {state['s3']['kind']} (no signature checks), not Ceph RGW: see above")
    return 0


# --- status / down ----------------------------------------------------------------------------


def failing_parts(state: dict) -> list[str]:
    """The parts that do not answer (empty when the whole stack is usable)."""
    failing = [rec["part"] for rec in state["processes"]
               if rec["part"] != "containerd" and not is_running(rec)]
    keys, ports = state["secrets"], state["ports"]
    checks = {
        "postgres": lambda: storage.pg_ready(ports["postgres"]),
        "s3": lambda: storage.s3_answers(state["s3"]["endpoint"], keys["access_key"],
                                         keys["secret_key"], BUCKET),
        "mlflow": lambda: _http_ok(f"http://127.0.0.1:{ports['mlflow']}/health"),
        "dockerd": lambda: containers.docker_ok(state["docker_host"]),
        "ray": lambda: containers.ray_nodes_alive(ray_address(state), keys["ray_token"]) >= 2,
    }
    for part, check in checks.items():
        try:
            ok = check()
        except KeyError:  # the part never started (a failed or interrupted `up`)
            ok = False
        if not ok:
            failing.append(part)
    return failing


def status(args: argparse.Namespace) -> int:
    state = load_state()
    if state is None:
        say("not running (no .platform/state.json): `make platform` starts it")
        return 1
    failing = failing_parts(state)
    if failing:
        say(f"not usable: {', '.join(failing)} not answering")
        return 1
    if not args.quiet:
        say(f"up: {json.dumps(state['ports'])}; env in {ENV_FILE}")
    return 0


def stop_stack(state: dict) -> None:
    """Containers first (they need dockerd), then processes in reverse start order."""
    for record in reversed(state["containers"]):
        say(f"{record['part']}: {containers.stop_container(state['docker_host'], record)}")
    for record in reversed(state["processes"]):
        say(f"{record['part']} (pid {record['pid']}): {stop_process(record)}")
    left = [rec["part"] for rec in state["processes"] if is_running(rec)]
    if left:
        raise SystemExit(f"[platform] still running after stop: {', '.join(left)}")
    for mount in containers.unmount_leftovers(BASE):
        say(f"unmounted {mount} (left by dockerd)")
    STATE.unlink(missing_ok=True)
    ENV_FILE.unlink(missing_ok=True)


def down(args: argparse.Namespace) -> int:
    state = load_state()
    if state is None:
        say("nothing to stop (no .platform/state.json)")
        return 0
    began = time.monotonic()
    stop_stack(state)
    say(f"down in {time.monotonic() - began:.1f} s; caches kept in {BASE} (image, base rootfs)")
    return 0


def clean(args: argparse.Namespace) -> int:
    """down, then remove .platform/ entirely (docker data root, base rootfs, build extras)."""
    down(args)
    failed: list[str] = []
    shutil.rmtree(BASE, onerror=lambda _func, path, exc: failed.append(f"{path}: {exc[1]}"))
    if failed:
        raise SystemExit("[platform] could not remove:\n  " + "\n  ".join(failed[:20]))
    for extra in (REPO / "cluster" / "build-extras").glob("*"):
        if extra.name not in ("README.md", ".gitignore"):
            extra.unlink()
    say(f"removed {BASE}")
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stack.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the stack, write .platform/env")
    start.add_argument("--s3", choices=("ceph", "moto"), default="ceph")
    start.add_argument("--base", default=None, metavar="IMAGE",
                       help="build on this image instead of the debootstrap base")
    start.add_argument("--cpus", type=int, default=2, help="logical CPUs per Ray node")
    check = commands.add_parser("status", help="exit 0 when every part answers")
    check.add_argument("--quiet", action="store_true")
    commands.add_parser("down", help="stop everything the last `up` started")
    commands.add_parser("clean", help="down, then remove .platform/ (all caches)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    command = {"up": up, "status": status, "down": down, "clean": clean}[args.command]
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
