"""The platform stack's state (.platform/state.json) and the environment it hands out
(.platform/env, the Ray containers' variables). Stdlib only; used by stack.py.

state.json lists every process (pid + start time) and container `up` started, in start order,
with the ports, the S3 endpoint and the generated secrets; it is written after each part, so
`down` can stop a half-started stack too. It is mode 0600: it holds passwords and the token.
"""

from __future__ import annotations

import json
import secrets
import shlex
import shutil
from pathlib import Path

import storage

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / ".platform"
STATE, ENV_FILE = BASE / "state.json", BASE / "env"
VENV_BIN = REPO / ".venv" / "bin"
BUCKET = "mlrt"
RUN_DIRS = ("postgres", "ceph", "logs", "ray", "moto")  # made anew by each `up`; the rest caches


def load_state() -> dict | None:
    try:
        return json.loads(STATE.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise SystemExit(f"[platform] {STATE} is not JSON ({exc}): fix or remove it") from exc


def save_state(state: dict) -> None:
    """Written after every part, so that a crash half-way still leaves `down` a full list."""
    BASE.mkdir(exist_ok=True)
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.chmod(0o600)  # it holds the stack's keys and passwords
    tmp.replace(STATE)


def new_state() -> dict:
    return {"repo": str(REPO), "dir": str(BASE), "processes": [], "containers": [],
            "ports": {}, "timings": {}, "bucket": BUCKET,
            "secrets": {"postgres": secrets.token_hex(16), "ray_token": secrets.token_hex(32),
                        "access_key": "MLRT" + secrets.token_hex(8).upper(),
                        "secret_key": secrets.token_urlsafe(30)}}


def reset_run_dirs() -> None:
    """A new cluster each time (fresh database, empty bucket): tests start from nothing."""
    BASE.mkdir(exist_ok=True)
    BASE.chmod(0o755)  # the postgres user must traverse it
    for name in RUN_DIRS:
        shutil.rmtree(BASE / name, ignore_errors=True)
    (BASE / "logs").mkdir()


# --- the environment handed out ------------------------------------------------------------


def s3_env(state: dict) -> dict:
    """What boto3, pyarrow and MLflow read to reach the bucket. The checksum settings: newer
    AWS SDKs (pyarrow 25's) send a checksum format RGW rejects with HTTP 411."""
    endpoint = state["s3"]["endpoint"]
    return {"AWS_ACCESS_KEY_ID": state["secrets"]["access_key"],
            "AWS_SECRET_ACCESS_KEY": state["secrets"]["secret_key"],
            "AWS_ENDPOINT_URL": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": storage.REGION,
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
            "AWS_EC2_METADATA_DISABLED": "true"}


def ray_address(state: dict) -> str:
    return f"http://127.0.0.1:{state['ports']['ray_dashboard']}"


def ray_env(state: dict) -> dict:
    """Passed into both Ray containers: jobs there reach MLflow and the bucket like the host."""
    return {**s3_env(state), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{state['ports']['mlflow']}",
            "MLRT_PLATFORM_STORAGE": f"s3://{BUCKET}/mlrt", "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": state["secrets"]["ray_token"]}


def write_env(state: dict) -> None:
    """.platform/env: `export` lines to source (and for the tests to read)."""
    values = {**ray_env(state), "RAY_ADDRESS": ray_address(state),
              "DOCKER_HOST": state["docker_host"]}
    lines = [f"export {key}={shlex.quote(value)}" for key, value in values.items()]
    ENV_FILE.write_text("# made by cluster/platform/stack.py up; removed by down\n"
                        + "\n".join(lines) + "\n")
    ENV_FILE.chmod(0o600)
