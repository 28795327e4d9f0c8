"""Shared fixtures. Unit tests never start Ray; integration tests share one Ray per session."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _own_mlflow_store(monkeypatch):
    """Every test writes its own MLflow store under its tmp storage, never a user's. setenv
    first so that teardown also removes what a test set (mlflow.set_tracking_uri exports the
    URI to the environment), before the next module-scoped fixture runs."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "RAY_ADDRESS"):
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for all integration tests (num_cpus is logical: more than the 2 cores)."""
    import ray

    from runtime.cluster.connect import init_ray

    os.environ.pop("RAY_ADDRESS", None)
    init_ray(num_cpus=4)
    yield ray
    ray.shutdown()
