"""The stack's containers: a private dockerd, the offline base image (debootstrap), the mlrt
image from cluster/Dockerfile, and a Ray head + one worker from it. Stdlib only; called by
stack.py.

dockerd gets its own data root, exec root, pidfile and socket under .platform/docker (it never
touches a system docker), no bridge and no iptables: every container runs with --network=host
and binds 127.0.0.1 only. The data root survives `platform-down`, so the image layers stay
cached: a code-only change rebuilds the last layers only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from procs import PartError, free_port, free_port_range, run, start_process, wait_until

DOCKER = "/usr/bin/docker"  # the client that matches Debian's dockerd (20.10)
BASE_IMAGE = "mlrt-base:bookworm"
IMAGE = "mlrt:platform"
TORCH_VERSION = "2.13.0"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
HEAD, WORKER = "mlrt-ray-head", "mlrt-ray-worker"
WORKER_PORTS = 60  # per node: enough worker processes for a 2-CPU node with Serve and Tune


# --- dockerd ----------------------------------------------------------------------------------


def start_dockerd(base: Path) -> tuple[dict, dict]:
    """dockerd with every path of its own under base/docker. Returns (record, facts)."""
    part, root = "dockerd", base / "docker"
    log = base / "logs" / "dockerd.log"
    if not Path("/usr/sbin/dockerd").exists():
        raise PartError(part, "/usr/sbin/dockerd not found: apt-get install docker.io")
    root.mkdir(parents=True, exist_ok=True)
    sock = root / "docker.sock"
    config = root / "daemon.json"
    config.write_text("{}\n")  # never read the machine's /etc/docker/daemon.json
    record = start_process(part, ["/usr/sbin/dockerd", "--config-file", str(config),
                                  "--data-root", str(root / "root"),
                                  "--exec-root", str(root / "exec"),
                                  "--pidfile", str(root / "dockerd.pid"), "-H", f"unix://{sock}",
                                  "--iptables=false", "--ip-masq=false", "--bridge=none",
                                  "--storage-driver=overlay2"], log)
    host = f"unix://{sock}"
    wait_until(part, lambda: docker_ok(host), 60, "answering", log, record)
    containerd_pidfile = root / "exec" / "containerd" / "containerd.pid"
    return record, {"host": host, "containerd_pidfile": str(containerd_pidfile)}


def mounts_under(base: Path, mounts_text: str) -> list[str]:
    """The mount points in a /proc/self/mounts text that lie under base, deepest first."""
    root = str(base.resolve()) + "/"
    # /proc/self/mounts escapes a space in a path as \040
    points = [line.split()[1].replace("\\040", " ") for line in mounts_text.splitlines()
              if line.strip()]
    return sorted((p for p in points if p.startswith(root)), key=len, reverse=True)


def unmount_leftovers(base: Path) -> list[str]:
    """Unmount what dockerd left mounted under base (its default network namespace, an nsfs
    bind mount under exec/netns, outlives dockerd): otherwise `rm -rf` of the checkout fails
    with "Device or resource busy". Only mounts under base. Returns those unmounted."""
    done = []
    for mount in mounts_under(base, Path("/proc/self/mounts").read_text()):
        if subprocess.run(["umount", "-l", mount], capture_output=True, check=False
                          ).returncode == 0:
            done.append(mount)
    return done


def docker_env(host: str) -> dict:
    return {**os.environ, "DOCKER_HOST": host, "DOCKER_BUILDKIT": "1"}


def docker_ok(host: str) -> bool:
    done = subprocess.run([DOCKER, "version", "--format", "{{.Server.Version}}"],
                          env=docker_env(host), capture_output=True, check=False)
    return done.returncode == 0


def image_exists(host: str, image: str) -> bool:
    done = subprocess.run([DOCKER, "image", "inspect", image], env=docker_env(host),
                          capture_output=True, check=False)
    return done.returncode == 0


# --- the offline base image -------------------------------------------------------------------


def read_apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses for bookworm (not -security), from
    sources.list(.d), one-line or deb822 format; deb.debian.org if none is found."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*.list")),
             *sorted((sources / "sources.list.d").glob("*.sources"))]
    for path in files:
        text = path.read_text() if path.exists() else ""
        for uris, suites in _apt_entries(text, deb822=path.suffix == ".sources"):
            if "bookworm" in suites and not any("security" in uri for uri in uris):
                return uris[0].rstrip("/")
    return DEFAULT_MIRROR


def _apt_entries(text: str, deb822: bool) -> list[tuple[list[str], list[str]]]:
    if not deb822:
        rows = [line.split() for line in text.splitlines() if line.startswith("deb ")]
        # deb [options] uri suite components...
        rows = [[w for w in row[1:] if not w.startswith("[") and not w.endswith("]")]
                for row in rows]
        return [([row[0]], [row[1]]) for row in rows if len(row) >= 2]
    entries = []
    for stanza in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in stanza.splitlines()
                      if ":" in line and not line.startswith(("#", " ")))
        if "deb" in fields.get("Types", "").split():
            entries.append((fields.get("URIs", "").split(), fields.get("Suites", "").split()))
    return entries


def ensure_base_image(base: Path, host: str) -> str:
    """mlrt-base:bookworm from debootstrap (cached: the rootfs under base/base-image is reused,
    the image lives in dockerd's data root). Returns what was done."""
    part, log = "base-image", base / "logs" / "base-image.log"
    if image_exists(host, BASE_IMAGE):
        return "cached"
    folder = base / "base-image"
    rootfs, done_marker = folder / "rootfs", folder / "complete"
    if not done_marker.exists():
        if not shutil.which("debootstrap"):
            raise PartError(part, "debootstrap not found: apt-get install debootstrap")
        shutil.rmtree(rootfs, ignore_errors=True)  # a half-made rootfs from an interrupted run
        rootfs.mkdir(parents=True)
        mirror = read_apt_mirror()
        # python3-venv: the image makes a venv for pip (python3-minimal has neither)
        run(part, ["debootstrap", "--variant=minbase", "--include=python3-minimal,python3-venv",
                   "bookworm", str(rootfs), mirror], log, timeout=1800)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        done_marker.write_text(mirror + "\n")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    run(part, [DOCKER, "import", "-", BASE_IMAGE], log, env=docker_env(host), stdin=tar.stdout)
    tar.wait()
    return "debootstrap + import"


# --- the mlrt image ---------------------------------------------------------------------------


def prepare_build_extras(repo: Path, venv_python: Path) -> list[str]:
    """Link this machine's torch CPU wheel and copy pip's CA bundle into cluster/build-extras
    (see its README). Returns what is there, for the progress line."""
    extras = repo / "cluster" / "build-extras"
    config = _pip_config(venv_python)
    wheel = _find_torch_wheel(config)
    found = []
    if wheel is not None:
        target = extras / wheel.name
        if not target.exists():
            try:
                os.link(wheel, target)  # 190 MB: a hard link when on the same filesystem
            except OSError:
                shutil.copy2(wheel, target)
        found.append(wheel.name)
    cert = os.environ.get("PIP_CERT") or config.get("cert")
    if cert and Path(cert).is_file():
        target = extras / "ca.crt"
        if not target.exists() or target.read_bytes() != Path(cert).read_bytes():
            shutil.copyfile(cert, target)
        found.append("ca.crt")
    return found


def _pip_config(venv_python: Path) -> dict:
    """pip's effective config as {key: value} (`pip config list`: 'global.cert='...'')."""
    done = subprocess.run([str(venv_python), "-m", "pip", "config", "list"],
                          capture_output=True, text=True, check=False)
    config = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        config.setdefault(key.rsplit(".", 1)[-1], value.strip("'\""))
    return config


def _find_torch_wheel(config: dict) -> Path | None:
    dirs = (os.environ.get("PIP_FIND_LINKS", "") + " " + config.get("find-links", "")).split()
    pattern = f"torch-{TORCH_VERSION}+cpu-cp311-cp311-*linux*x86_64.whl"
    for folder in dirs:
        folder = folder.removeprefix("file://")
        matches = sorted(Path(folder).glob(pattern)) if Path(folder).is_dir() else []
        if matches:
            return matches[0]
    return None


def build_image(repo: Path, base: Path, host: str, base_image: str) -> None:
    """docker build cluster/Dockerfile on `base_image` (BuildKit, host network for pip)."""
    run("image", [DOCKER, "build", "--network=host", "--progress=plain",
                  "-f", str(repo / "cluster" / "Dockerfile"), "-t", IMAGE,
                  "--build-arg", f"BASE={base_image}", str(repo)],
        base / "logs" / "image-build.log", env=docker_env(host), timeout=3600)


# --- Ray nodes --------------------------------------------------------------------------------


def node_ports(head: bool) -> dict:
    """Every port a Ray node listens on, chosen free (two nodes share the host network, and
    other Rays on this machine use the defaults)."""
    ports = {name: free_port() for name in ("node-manager-port", "object-manager-port",
                                            "metrics-export-port", "dashboard-agent-listen-port",
                                            "dashboard-agent-grpc-port", "runtime-env-agent-port")}
    low = free_port_range(WORKER_PORTS)
    ports.update({"min-worker-port": low, "max-worker-port": low + WORKER_PORTS - 1})
    if head:
        ports.update({"port": free_port(), "dashboard-port": free_port(),
                      "ray-client-server-port": free_port()})
    return ports


def head_env() -> dict:
    """What only the head needs. Ray "resolves" --node-ip-address=127.0.0.1 to the machine's
    external address (so that other hosts can reach it) and then binds its gRPC servers on
    0.0.0.0; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is Ray's local-only mode: the node IP stays
    127.0.0.1 and every server binds loopback. The autoscaler and dashboard metrics ports are
    fixed by default (44217, 44227): free ones instead."""
    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "AUTOSCALER_METRIC_PORT": str(free_port()),
            "DASHBOARD_METRIC_PORT": str(free_port())}


def node_env(head: bool) -> dict:
    """Environment of one Ray node's container. Both nodes share the host network, so every
    port Ray Serve fixes by default gets a free one per node: HAProxy's stats and metrics
    ports, the head's fallback proxy, and (worker only; Serve exempts the head) the proxy's
    HTTP and gRPC ports. Gloo
    (torch's CPU collectives) is told to use loopback instead of resolving the host name."""
    env = {"GLOO_SOCKET_IFNAME": "lo",
           "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
           "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port())}
    if head:
        env.update(head_env())
        # Serve's fallback proxy (HAProxy mode) runs on the head at fixed 8500/9500: other
        # Serve instances on this machine (tests, `mlrt serve`) use the same defaults
        env.update({"RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
                    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port())})
    else:
        env.update({"RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(free_port()),
                    "RAY_SERVE_WORKER_PROXY_GRPC_PORT": str(free_port())})
    return env


def start_ray_node(base: Path, host: str, name: str, ports: dict, env: dict, *,
                   num_cpus: int, object_store_bytes: int, memory: str,
                   gcs_port: int | None = None) -> dict:
    """`ray start --block` in a container from the mlrt image, on the host network, every
    port on 127.0.0.1. A worker (gcs_port set) joins the head by the name mlrt-ray-head,
    mapped to 127.0.0.1 in its /etc/hosts: a literal 127.0.0.1 would be rewritten to the
    external address (see head_env, whose local-only mode refuses worker nodes), while a name
    is kept, and the node IP Ray derives from it is 127.0.0.1. Ray's session logs land in
    base/ray/NAME on the host. `env` is passed by name (-e KEY): no secret on a command line."""
    part = name.removeprefix("mlrt-")
    logs = base / "ray" / name
    logs.mkdir(parents=True, exist_ok=True)
    os.chown(logs, 1000, 100)  # the image's ray user (uid 1000, group users)
    log = base / "logs" / f"{part}.log"
    run(part, [DOCKER, "rm", "-f", name], log, env=docker_env(host))
    args = ["ray", "start", "--block", f"--num-cpus={num_cpus}",
            f"--object-store-memory={object_store_bytes}", "--disable-usage-stats",
            *(f"--{key}={value}" for key, value in ports.items())]
    extra = []
    own = node_env(head=gcs_port is None)
    env = {**env, **own}
    if gcs_port is None:
        args += ["--head", "--node-ip-address=127.0.0.1", "--include-dashboard=true",
                 "--dashboard-host=127.0.0.1"]
    else:
        extra = [f"--add-host={HEAD}:127.0.0.1"]
        args += [f"--address={HEAD}:{gcs_port}"]
    argv = [DOCKER, "run", "-d", "--init", "--name", name, "--network=host", *extra,
            f"--memory={memory}", "--shm-size=1g", "-v", f"{logs}:/tmp/ray",
            *(item for key in sorted(env) for item in ("-e", key)), IMAGE, *args]
    container = run(part, argv, log, env={**docker_env(host), **env}).strip()
    pid = run(part, [DOCKER, "inspect", "-f", "{{.State.Pid}}", container], log,
              env=docker_env(host)).strip()
    return {"part": part, "name": name, "id": container, "pid": int(pid),
            # session_latest there is a symlink valid inside the container only
            "log": str(logs), "node_env": own}


def container_running(host: str, name: str) -> bool:
    done = subprocess.run([DOCKER, "inspect", "-f", "{{.State.Running}}", name],
                          env=docker_env(host), capture_output=True, text=True, check=False)
    return done.stdout.strip() == "true"


def save_container_log(host: str, record: dict, base: Path) -> Path:
    """`docker logs` of a container into base/logs (for the error message of a failed part)."""
    path = base / "logs" / f"{record['part']}.log"
    with open(path, "ab") as out:
        subprocess.run([DOCKER, "logs", record["id"]], env=docker_env(host), stdout=out,
                       stderr=subprocess.STDOUT, check=False)
    return path


def ray_nodes_alive(dashboard: str, token: str) -> int:
    """How many Ray nodes the head's state API reports ALIVE (0 if it does not answer)."""
    request = urllib.request.Request(f"{dashboard}/api/v0/nodes?limit=100",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError):
        return 0
    nodes = body.get("data", {}).get("result", {}).get("result", [])
    return sum(1 for node in nodes if node.get("state") == "ALIVE")


def stop_container(host: str, record: dict) -> str:
    """docker stop (SIGTERM, 10 s grace), then remove. Without a daemon, kill its init pid."""
    env = docker_env(host)
    if not docker_ok(host):
        try:
            os.kill(record["pid"], 9)
        except ProcessLookupError:
            return "not running"
        return "killed (no dockerd)"
    stopped = subprocess.run([DOCKER, "stop", "--time", "10", record["id"]], env=env,
                             capture_output=True, check=False)
    subprocess.run([DOCKER, "rm", "-f", record["id"]], env=env, capture_output=True, check=False)
    return "stopped" if stopped.returncode == 0 else "not running"


def wait_for_ray(part: str, check, timeout: float, what: str, host: str, record: dict,
                 base: Path) -> None:
    """wait_until for a container: fails at once if the container exited. The error names
    the container's output (saved from `docker logs`) and Ray's own session logs."""
    def ready() -> bool:
        if check():
            return True
        if not container_running(host, record["name"]):
            raise PartError(part, f"container exited before {what}")
        return False
    try:
        wait_until(part, ready, timeout, what)
    except PartError as exc:
        saved = save_container_log(host, record, base)
        raise PartError(part, f"{exc.message}; Ray's logs: "
                        f"{record['log']}/session_*/logs", saved) from exc
