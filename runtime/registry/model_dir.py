"""A model directory: the files a registered version holds, saved atomically and loaded safely.

    model_dir/
      mlrt_model.json     framework, task, classes, raw features, architecture
      preprocess.json     fitted preprocessing state (runtime.features)
      profile.json        the training split's data profile (drift reference)
      prediction_profile.json   the test split's predictions profiled (prediction drift)
      model.safetensors   torch state_dict            (framework torch)
      model.skops         scikit-learn estimator      (framework sklearn)

Nothing here unpickles: safetensors holds tensors only, and skops loads only the types allowed
by `_TRUSTED_PREFIXES`; anything else raises UnsafeModelError naming the type. `fetch_model`
reads a registered version's files into memory (to ship them to Ray actors and replicas).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import InputError, UnsafeModelError
from runtime.features.state import PreprocessState
from runtime.registry.uris import parse_model_uri, resolve_version

META_FILE = "mlrt_model.json"
STATE_FILE = "preprocess.json"
TORCH_FILE = "model.safetensors"
SKOPS_FILE = "model.skops"
# Types a scikit-learn model file may contain; skops refuses everything else.
_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.", "_loss.")
PROFILE_FILE = "profile.json"
PREDICTION_PROFILE_FILE = "prediction_profile.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a crash leaves either the old file or the new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Architecture:
    """How to rebuild a torch model before loading its weights (safetensors hold tensors only)."""

    spec: Mapping[str, Any]  # the spec's model section as JSON: torch_mlp or a python builder
    n_in: int
    n_out: int


@dataclass(frozen=True)
class ModelMeta:
    """`mlrt_model.json`: what a model version is, beside its weights and preprocessing."""

    framework: str  # "torch" | "sklearn"
    task: str  # "classification" | "regression"
    classes: list | None  # sorted labels of a classifier, None for regression
    features: tuple[str, ...]  # raw input features, in order
    target: str
    name: str = ""
    architecture: Architecture | None = None  # torch models only

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"framework": self.framework, "task": self.task,
                               "name": self.name, "classes": self.classes,
                               "features": list(self.features), "target": self.target}
        if self.architecture is not None:
            arch = self.architecture
            out["architecture"] = {"spec": dict(arch.spec), "n_in": arch.n_in,
                                   "n_out": arch.n_out}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelMeta:
        arch = data.get("architecture")
        return cls(framework=data["framework"], task=data["task"], classes=data.get("classes"),
                   features=tuple(data["features"]), target=data.get("target", ""),
                   name=data.get("name", ""),
                   architecture=Architecture(arch["spec"], int(arch["n_in"]), int(arch["n_out"]))
                   if arch else None)


def save_model_dir(directory: Path, meta: ModelMeta, state: PreprocessState,
                   model: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if meta.framework == "torch":
        from safetensors.torch import save_file

        weights = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
        save_file(weights, directory / TORCH_FILE)
    else:
        import skops.io

        skops.io.dump(model, directory / SKOPS_FILE)
    write_json_atomic(directory / STATE_FILE, state.to_json())
    write_json_atomic(directory / META_FILE, meta.to_json())
    return directory


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module


def read_model_dir(directory: Path) -> tuple[ModelMeta, PreprocessState, Any]:
    """(meta, preprocessing state, model) of a saved model directory."""
    meta = ModelMeta.from_json(json.loads((directory / META_FILE).read_text()))
    state = PreprocessState.from_json(json.loads((directory / STATE_FILE).read_text()))
    if meta.framework == "torch":
        model = _load_torch(directory, meta)
    else:
        model = _load_skops(directory / SKOPS_FILE)
    return meta, state, model


def _load_torch(directory: Path, meta: ModelMeta):
    from safetensors.torch import load_file

    from runtime.spec import PythonModel, TorchMLP
    from runtime.training.models import build_model

    arch = meta.architecture
    if arch is None:
        raise InputError(f"{directory / META_FILE}: a torch model without its architecture")
    kind = TorchMLP if arch.spec["kind"] == "torch_mlp" else PythonModel
    model = build_model(kind(**arch.spec), arch.n_in, arch.n_out)
    model.load_state_dict(load_file(directory / TORCH_FILE))
    model.eval()
    return model


def _load_skops(path: Path):
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=path)
    refused = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if refused:
        raise UnsafeModelError(f"{path}: refusing to load types outside scikit-learn/numpy/scipy: "
                               f"{refused}")
    return skops.io.load(path, trusted=untrusted)


@dataclass(frozen=True)
class ModelFiles:
    """A registered model version's mlrt files, in memory so they can be shipped to actors."""

    name: str
    version: str
    files: dict[str, bytes]  # path relative to model_dir -> content
    info: Any = None  # runtime.registry.versions.VersionInfo: tags, run id

    @property
    def meta(self) -> ModelMeta:
        return ModelMeta.from_json(json.loads(self.files[META_FILE]))

    @property
    def state(self) -> PreprocessState:
        return PreprocessState.from_json(json.loads(self.files[STATE_FILE]))

    @property
    def feature_types(self) -> dict[str, str]:
        state = self.state
        return {c: state.feature_types[c] for c in state.features}

    def output_columns(self) -> list[str]:
        classes = self.meta.classes
        return ["prediction", *(f"probability_{c}" for c in classes or [])]


def fetch_model(uri: str) -> ModelFiles:
    """Resolve a model URI in the current MLflow registry and read its mlrt files."""
    import mlflow.artifacts

    name, version, alias = parse_model_uri(uri)
    info = resolve_version(name, version, alias)
    # a progress bar per replica / actor load is noise in the job's and the server's logs
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="mlrt-model-") as tmp:
        root = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{info.version}", dst_path=tmp))
        model_dir = _find_model_dir(root, uri)
        files = {str(p.relative_to(model_dir)): p.read_bytes()
                 for p in sorted(model_dir.rglob("*")) if p.is_file()}
    return ModelFiles(name=name, version=info.version, files=files, info=info)


def _find_model_dir(root: Path, uri: str) -> Path:
    """The pyfunc artifact `model_dir` (see runtime.registry) inside a downloaded model."""
    import yaml

    mlmodel = root / "MLmodel"
    if mlmodel.is_file():
        flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {})
        entry = flavor.get("python_function", {}).get("artifacts", {}).get("model_dir", {})
        path = root / entry["path"] if isinstance(entry, dict) and entry.get("path") else None
        if path is not None and (path / META_FILE).is_file():
            return path
    found = sorted(root.rglob(META_FILE))
    if not found:
        raise InputError(f"model URI: {uri} is not an mlrt model (no {META_FILE} in its files)")
    return found[0].parent
