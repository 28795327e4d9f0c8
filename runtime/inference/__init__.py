"""Inference: the predictor (a model version with its preprocessing) and batch inference over
a dataset on Ray Data.

`Predictor` is importable from here because model versions registered before the package
layout carry a copy of the pyfunc entry point that does `from runtime.inference import
Predictor`: keep this import path so that those versions still load in `mlflow.pyfunc`.
"""

from runtime.inference.predictor import Predictor

__all__ = ["Predictor"]
