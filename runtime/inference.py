"""A saved model directory and the predictor that serves it. No Ray here.

    model_dir/
      mlrt_model.json     framework, task, classes, raw features, architecture
      preprocess.json     fitted preprocessing state (runtime.preprocess)
      model.safetensors   torch state_dict            (framework torch)
      model.skops         scikit-learn estimator      (framework sklearn)

Nothing here unpickles: safetensors holds tensors only, and skops loads only the types allowed
by `_TRUSTED_PREFIXES`; anything else raises UnsafeModelError naming the type.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runtime.errors import UnsafeModelError
from runtime.transform import encoders, transform_frame, transform_numeric

META_FILE = "mlrt_model.json"
STATE_FILE = "preprocess.json"
TORCH_FILE = "model.safetensors"
SKOPS_FILE = "model.skops"
# Types a scikit-learn model file may contain; skops refuses everything else.
_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.", "_loss.")


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


def save_model_dir(directory: Path, meta: dict, state: dict, model: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if meta["framework"] == "torch":
        from safetensors.torch import save_file

        weights = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
        save_file(weights, directory / TORCH_FILE)
    else:
        import skops.io

        skops.io.dump(model, directory / SKOPS_FILE)
    write_json_atomic(directory / STATE_FILE, state)
    write_json_atomic(directory / META_FILE, meta)
    return directory


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module


@dataclass
class Predictor:
    meta: dict
    state: dict
    model: Any

    @classmethod
    def load(cls, directory: str | Path) -> Predictor:
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        state = json.loads((directory / STATE_FILE).read_text())
        if meta["framework"] == "torch":
            model = _load_torch(directory, meta)
        else:
            model = _load_skops(directory / SKOPS_FILE)
        return cls(meta=meta, state=state, model=model)

    @classmethod
    def from_files(cls, files: dict[str, bytes]) -> Predictor:
        """From a model's files held in memory (shipped to a Ray actor or replica)."""
        with tempfile.TemporaryDirectory(prefix="mlrt-model-") as tmp:
            for rel, content in files.items():
                path = Path(tmp) / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            return cls.load(tmp)  # reads every file now: tmp can go

    @property
    def features(self) -> list[str]:
        return self.state["features"]

    @property
    def classes(self) -> list | None:
        return self.meta.get("classes")

    def predict(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw feature rows -> (predictions, class probabilities or None)."""
        columns = self.features
        if not encoders(self.state) and set(columns) <= set(frame.columns) and all(
                pd.api.types.is_numeric_dtype(frame[c].dtype) for c in columns):
            return self.predict_rows(frame[columns].to_numpy(dtype=np.float64,
                                                             na_value=np.nan))
        return self.predict_matrix(transform_frame(self.state, frame))

    def predict_rows(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw numeric rows (float64, NaN = null, columns in `features` order) ->
        (predictions, probabilities), without pandas: online serving's fast path."""
        return self.predict_matrix(transform_numeric(self.state, x))

    def predict_matrix(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Preprocessed float32 rows (runtime.transform) -> (predictions, probabilities)."""
        if self.meta["framework"] == "torch":
            import torch

            with torch.no_grad():
                out = self.model(torch.from_numpy(x)).numpy()
            if self.classes is None:
                return out.reshape(-1), None
            proba = _softmax(out)
        elif self.classes is None:
            return np.asarray(self.model.predict(x)).reshape(-1), None
        elif hasattr(self.model, "predict_proba"):
            proba = np.asarray(self.model.predict_proba(x), dtype=np.float64)
        else:
            labels = np.asarray(self.model.predict(x))
            proba = (labels[:, None] == np.asarray(self.classes)[None, :]).astype(np.float64)
        return np.asarray(self.classes)[proba.argmax(axis=1)], proba

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(self.output_columns(*self.predict(frame)))

    def output_columns(self, predictions: np.ndarray,
                       proba: np.ndarray | None) -> dict[str, np.ndarray]:
        """`prediction`, then `probability_<class>` per class (classifiers)."""
        out = {"prediction": predictions}
        if proba is not None:
            for i, label in enumerate(self.classes):
                out[f"probability_{label}"] = proba[:, i]
        return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _load_torch(directory: Path, meta: dict):
    from safetensors.torch import load_file

    from runtime.models import build_model
    from runtime.spec import PythonModel, TorchMLP

    arch = meta["architecture"]
    spec = TorchMLP(**arch["spec"]) if arch["spec"]["kind"] == "torch_mlp" else PythonModel(
        **arch["spec"])
    model = build_model(spec, arch["n_in"], arch["n_out"])
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
