"""The predictor: a loaded model version (runtime.registry.model_dir) with its own
preprocessing, from raw feature rows to predictions and class probabilities. No Ray here;
evaluation, `mlflow.pyfunc`, batch inference and the Serve replicas all call it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runtime.features.apply import NumericTransform, encoders, transform_frame, transform_numeric
from runtime.features.state import PreprocessState
from runtime.registry.model_dir import ModelMeta, read_model_dir


@dataclass
class Predictor:
    meta: ModelMeta
    state: PreprocessState
    model: Any

    @classmethod
    def load(cls, directory: str | Path) -> Predictor:
        meta, state, model = read_model_dir(Path(directory))
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
        return list(self.state.features)

    @property
    def classes(self) -> list | None:
        return self.meta.classes

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
        return self.predict_matrix(transform_numeric(self.state, x, self._numeric))

    @cached_property
    def _numeric(self) -> NumericTransform:
        """The state's numeric constants, worked out on the first call."""
        return NumericTransform(self.state)

    def predict_matrix(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Preprocessed float32 rows (runtime.features.apply) -> (predictions, probabilities)."""
        if self.meta.framework == "torch":
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


