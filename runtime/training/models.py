"""Model builders by kind: torch_mlp, a scikit-learn estimator by import path, or user code.

A `python` builder is `module:function` importable from the working directory, called as
`build(n_features=..., n_outputs=..., **params)`; it returns a `torch.nn.Module` (trained with
Ray Train like torch_mlp) or a scikit-learn style estimator (fitted in a Ray task).
"""

from __future__ import annotations

import importlib
from typing import Any

from runtime.errors import InputError
from runtime.spec import ModelSpec, PythonModel, SklearnModel, TorchMLP


def build_mlp(n_in: int, n_out: int, hidden: list[int], dropout: float = 0.0):
    import torch.nn as nn

    layers: list[nn.Module] = []
    width = n_in
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def import_object(path: str, field: str) -> Any:
    """Import `package.module.Name` or `package.module:name`, naming the spec field on failure."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"{field}: cannot import module '{module_name}': {e}") from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise InputError(f"{field}: module '{module_name}' has no '{attr}'") from e


def build_model(spec: ModelSpec, n_in: int, n_out: int) -> Any:
    """A fresh, untrained model for the spec: torch.nn.Module or a scikit-learn estimator."""
    if isinstance(spec, TorchMLP):
        return build_mlp(n_in, n_out, spec.hidden, spec.dropout)
    if isinstance(spec, SklearnModel):
        cls = import_object(spec.estimator, "model.estimator")
        try:
            return cls(**spec.params)
        except TypeError as e:
            raise InputError(f"model.params: {e}") from e
    if isinstance(spec, PythonModel):
        build = import_object(spec.builder, "model.builder")
        model = build(n_features=n_in, n_outputs=n_out, **spec.params)
        if framework_of(model) is None:
            raise InputError(f"model.builder: {spec.builder} returned {type(model).__name__}, "
                             "expected a torch.nn.Module or an estimator with fit/predict")
        return model
    raise InputError(f"model.kind: unsupported {spec!r}")


def framework_of(model: Any) -> str | None:
    try:
        import torch.nn as nn

        if isinstance(model, nn.Module):
            return "torch"
    except ImportError:  # a sklearn-only install can still load sklearn models
        pass
    if hasattr(model, "fit") and hasattr(model, "predict"):
        return "sklearn"
    return None


def spec_framework(spec: ModelSpec, n_in: int = 1, n_out: int = 1) -> str:
    if isinstance(spec, TorchMLP):
        return "torch"
    if isinstance(spec, SklearnModel):
        return "sklearn"
    return framework_of(build_model(spec, n_in, n_out)) or "sklearn"
