"""The stack's stores: PostgreSQL 15 (MLflow's backend) and an S3 endpoint (Ceph RGW, or
moto's server when RGW cannot start). Stdlib only; called by stack.py.

PostgreSQL runs as the `postgres` user from its own data dir (initdb), never the system
service. Ceph is one monitor, one in-memory OSD (memstore) and one radosgw, no auth between
them, all on 127.0.0.1; the S3 API in front of them checks signatures like AWS does.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

from procs import PartError, free_port, run, start_process, wait_until

PG_BIN = Path("/usr/lib/postgresql/15/bin")
REGION = "us-east-1"


# --- PostgreSQL -------------------------------------------------------------------------------


def start_postgres(base: Path, password: str) -> tuple[dict, dict]:
    """initdb a new cluster under base/postgres and start it on a free loopback port with
    password (scram) auth. Returns (process record, facts: port, url of the mlflow database)."""
    part, root = "postgres", base / "postgres"
    data, sockets, log = root / "data", root / "run", base / "logs" / "postgres.log"
    _require(part, PG_BIN / "postgres", "apt-get install postgresql")
    for folder in (data, sockets):
        folder.mkdir(parents=True)
        shutil.chown(folder, "postgres", "postgres")
    data.chmod(0o700)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    shutil.chown(pwfile, "postgres", "postgres")
    pwfile.chmod(0o600)
    run(part, [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
               f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C.UTF-8"], log,
        user="postgres")
    pwfile.unlink()
    port = free_port()
    record = start_process(part, [str(PG_BIN / "postgres"), "-D", str(data), "-h", "127.0.0.1",
                                  "-p", str(port), "-k", str(sockets)],
                           log, user="postgres", cwd=root, stop_signal="SIGINT")  # fast stop
    env = {**os.environ, "PGPASSWORD": password}
    wait_until(part, lambda: pg_ready(port), 60, "accepting connections", log, record)
    run(part, [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
               "mlflow"], log, env=env)
    url = f"postgresql+psycopg2://postgres:{password}@127.0.0.1:{port}/mlflow"
    return record, {"port": port, "url": url, "data": str(data)}


def pg_ready(port: int) -> bool:
    done = subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
                          check=False)
    return done.returncode == 0


def _require(part: str, binary: Path | str, install: str) -> None:
    if not (Path(binary).exists() or shutil.which(str(binary))):
        raise PartError(part, f"{binary} not found: {install}")


# --- Ceph RGW ---------------------------------------------------------------------------------


def write_ceph_conf(root: Path, fsid: str, mon_ports: tuple[int, int], rgw_port: int) -> Path:
    """One ceph.conf for the monitor, the OSD, radosgw and the admin tools."""
    v2, v1 = mon_ports
    conf = root / "ceph.conf"
    conf.write_text(f"""[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]
mon initial members = a
# every daemon binds loopback only
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
# a private test cluster on loopback: no cephx between its daemons
auth cluster required = none
auth service required = none
auth client required = none
# without this radosgw waits ~300 s at authentication with auth none
ms mon client mode = crc secure
run dir = {root}/run
admin socket = {root}/run/$name.asok
log file = {root}/log/$name.log
mon cluster log file = {root}/log/cluster.log
# one OSD: one copy of everything, no manager to autoscale placement groups
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd pool default pg autoscale mode = off
osd pool default pg num = 8
osd pool default pgp num = 8
mon data avail warn = 2
mon data avail crit = 1

[mon.a]
mon data = {root}/mon

[osd.0]
osd data = {root}/osd
osd objectstore = memstore
# capacity the OSD reports; memory is used only for what is stored
memstore device bytes = 4294967296

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw data = {root}/rgw
""")
    return conf


def start_ceph(base: Path, access_key: str, secret_key: str, bucket: str) -> tuple[list, dict]:
    """Monitor, in-memory OSD and radosgw; an S3 user with the given keys and one bucket.
    Returns (process records, facts). On failure the records started so far are attached to
    the PartError (`.started`) so that the caller stops them."""
    root, logs = base / "ceph", base / "logs"
    for folder in ("run", "log", "mon", "osd", "rgw"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for binary in ("ceph-mon", "ceph-osd", "radosgw", "monmaptool", "radosgw-admin"):
        _require("ceph", binary, "apt-get install ceph-mon ceph-osd radosgw ceph-common")
    fsid, mon_ports, rgw_port = str(uuid.uuid4()), (free_port(), free_port()), free_port()
    conf = write_ceph_conf(root, fsid, mon_ports, rgw_port)
    records: list[dict] = []
    try:
        records.append(_start_mon(root, conf, fsid, mon_ports, logs / "ceph-mon.log"))
        records.append(_start_osd(conf, logs / "ceph-osd.log"))
        records.append(_start_rgw(conf, rgw_port, logs / "radosgw.log"))
        endpoint = f"http://127.0.0.1:{rgw_port}"
        run("ceph-rgw", ["radosgw-admin", "-c", str(conf), "user", "create", "--uid=mlrt",
                         "--display-name=mlrt platform", f"--access-key={access_key}",
                         f"--secret-key={secret_key}"], logs / "radosgw.log", timeout=120)
        create_bucket(endpoint, access_key, secret_key, bucket, "ceph-rgw", logs / "radosgw.log")
    except PartError as exc:
        exc.started = records
        raise
    return records, {"endpoint": endpoint, "port": rgw_port, "conf": str(conf), "kind": "ceph"}


def _start_mon(root: Path, conf: Path, fsid: str, ports: tuple[int, int], log: Path) -> dict:
    part, monmap = "ceph-mon", root / "monmap"
    # --addv with both protocols: plain --add on a non-default port gives a map that
    # old-protocol (v1) clients such as radosgw's cannot reach
    run(part, ["monmaptool", "--create", "--fsid", fsid, "--addv", "a",
               f"[v2:127.0.0.1:{ports[0]},v1:127.0.0.1:{ports[1]}]", str(monmap)], log)
    run(part, ["ceph-mon", "-c", str(conf), "--mkfs", "-i", "a", "--monmap", str(monmap),
               "--keyring", "/dev/null"], log)
    record = start_process(part, ["ceph-mon", "-c", str(conf), "-i", "a", "-f"], log)
    wait_until(part, lambda: _ceph_ok(conf, "mon", "stat"), 60, "in quorum", log, record)
    return record


def _start_osd(conf: Path, log: Path) -> dict:
    part = "ceph-osd"
    osd_id = run(part, ["ceph", "-c", str(conf), "osd", "create"], log).strip()
    if osd_id != "0":
        raise PartError(part, f"expected osd id 0 in a new cluster, got {osd_id!r}", log)
    run(part, ["ceph", "-c", str(conf), "osd", "crush", "add", "osd.0", "1", "root=default",
               "host=localhost"], log)
    run(part, ["ceph-osd", "-c", str(conf), "-i", "0", "--mkfs"], log)
    record = start_process(part, ["ceph-osd", "-c", str(conf), "-i", "0", "-f"], log)
    wait_until(part, lambda: _osd_up(conf), 90, "up", log, record)
    return record


def _start_rgw(conf: Path, port: int, log: Path) -> dict:
    part = "ceph-rgw"
    record = start_process(part, ["radosgw", "-c", str(conf), "-n", "client.rgw.a", "-f"], log)
    # radosgw creates its pools on first start: allow for that
    wait_until(part, lambda: _http_status(f"http://127.0.0.1:{port}/") == 200, 180,
               f"answering on 127.0.0.1:{port}", log, record)
    return record


def _ceph_ok(conf: Path, *args: str) -> bool:
    done = subprocess.run(["ceph", "-c", str(conf), "--connect-timeout", "5", *args],
                          capture_output=True, check=False)
    return done.returncode == 0


def _osd_up(conf: Path) -> bool:
    done = subprocess.run(["ceph", "-c", str(conf), "--connect-timeout", "5", "osd", "stat"],
                          capture_output=True, text=True, check=False)
    return done.returncode == 0 and "1 up" in done.stdout


def _http_status(url: str, headers: dict | None = None, method: str = "GET") -> int | None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {},
                                                           method=method), timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


# --- moto (fallback) --------------------------------------------------------------------------


def start_moto(base: Path, venv_bin: Path, access_key: str, secret_key: str,
               bucket: str) -> tuple[list, dict]:
    """moto's S3 server: accepts any key (no signature checks), for machines where RGW cannot
    start. Installed into the venv on first use (it is not part of the platform extra)."""
    part, log = "moto", base / "logs" / "moto.log"
    server = venv_bin / "moto_server"
    if not server.exists():
        run(part, [str(venv_bin / "python"), "-m", "pip", "install", "--quiet", "moto[server]"],
            log)
    port = free_port()
    record = start_process(part, [str(server), "-H", "127.0.0.1", "-p", str(port)], log)
    endpoint = f"http://127.0.0.1:{port}"
    wait_until(part, lambda: _http_status(endpoint + "/") == 200, 60, "answering", log, record)
    create_bucket(endpoint, access_key, secret_key, bucket, part, log)
    return [record], {"endpoint": endpoint, "port": port, "kind": "moto"}


# --- S3 requests (SigV4, enough to create a bucket and check the keys) ------------------------


def s3_request(endpoint: str, access_key: str, secret_key: str, method: str,
               path: str) -> tuple[int | None, bytes]:
    """One signed S3 request with an empty body (path-style). Returns (status, body)."""
    host = endpoint.split("://", 1)[1]
    amz_date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    payload_hash = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical_headers = "".join(f"{key}:{headers[key]}\n" for key in sorted(headers))
    canonical = f"{method}\n{path}\n\n{canonical_headers}\n{signed}\n{payload_hash}"
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (amz_date[:8], REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                                f"SignedHeaders={signed}, Signature={signature}")
    request = urllib.request.Request(endpoint + path, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc).encode()


def create_bucket(endpoint: str, access_key: str, secret_key: str, bucket: str, part: str,
                  log: Path) -> None:
    """PUT the bucket (retried briefly: a new RGW user can take a moment to be visible)."""
    for _ in range(20):
        status, body = s3_request(endpoint, access_key, secret_key, "PUT", f"/{bucket}")
        if status == 200 or b"BucketAlreadyOwnedByYou" in body:
            return
        time.sleep(1)
    raise PartError(part, f"cannot create bucket {bucket}: HTTP {status} {body[:300]!r}", log)


def s3_answers(endpoint: str, access_key: str, secret_key: str, bucket: str) -> bool:
    """The bucket is listable with the stack's keys (used by `status` and the tests' probe)."""
    status, _ = s3_request(endpoint, access_key, secret_key, "GET", f"/{bucket}")
    return status == 200


if __name__ == "__main__":
    sys.exit("run cluster/platform/stack.py, not this module")
