"""What a run records about itself besides metrics: the spec, the data, the model version's
pip requirements and the git commit. Everything is written through runtime.registry.tracking.
"""

from __future__ import annotations

import json
import os
import subprocess
from importlib import metadata

import yaml

from runtime.cluster.submit import GIT_COMMIT_ENV
from runtime.data.table import Table
from runtime.features.state import PreprocessState
from runtime.registry import tracking
from runtime.registry.model_dir import PROFILE_FILE, ModelMeta
from runtime.spec import JobSpec


def log_spec(spec: JobSpec) -> None:
    """Params (the spec flattened, serving and placement left out), spec hash, git commit and
    the spec as YAML, on the active run."""
    tracking.log_params(_flatten(spec.model_dump(
        mode="json", exclude={"serve", "tune", "runtime", "cluster"})))
    tracking.set_tags({"mlrt.spec_hash": spec.spec_hash(), "mlrt.git_commit": git_commit() or ""})
    tracking.log_text(yaml.safe_dump(recorded_spec(spec), sort_keys=False), "spec.yaml")


def recorded_spec(spec: JobSpec) -> dict:
    """The spec as the run records it: `runtime.env_vars` may carry credentials, so only their
    names are kept."""
    recorded = spec.model_dump(mode="json")
    if recorded.get("runtime"):
        recorded["runtime"]["env_vars"] = dict.fromkeys(recorded["runtime"]["env_vars"], "***")
    return recorded


def log_data(table: Table, state: PreprocessState, profile: dict) -> None:
    """Fingerprint, rows, the fitted preprocessing state, the profile and the checks' report
    (with a sample of dropped rows), on the active run."""
    tracking.set_tags({"mlrt.data_fingerprint": table.fingerprint, "mlrt.rows": str(table.rows)})
    tracking.log_dict(state.to_json(), "preprocess.json")
    tracking.log_dict(profile, PROFILE_FILE)
    tracking.log_dict(table.checks.as_dict(), "data_checks/report.json")
    if table.checks.sample is not None:
        tracking.log_text(table.checks.sample.to_csv(index=False),
                          "data_checks/dropped_rows_sample.csv")


def _flatten(data: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = json.dumps(value) if not isinstance(value, str) else value
    return flat


def requirements(meta: ModelMeta) -> list[str]:
    names = ["mlflow", "pandas", "numpy", "pyyaml", "pydantic"]
    names += ["torch", "safetensors"] if meta.framework == "torch" else ["scikit-learn", "skops"]
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def git_commit() -> str | None:
    """The commit of the code being run: the submitter's (MLRT_GIT_COMMIT) for a submitted
    job, else `git rev-parse HEAD` here."""
    if os.environ.get(GIT_COMMIT_ENV):
        return os.environ[GIT_COMMIT_ENV]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
