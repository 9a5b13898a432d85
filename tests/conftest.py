"""Shared test settings: marks and small helpers used across test files."""
from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked `cuda` on machines without a CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _mlflow_globals():
    """A test that sets MLflow's global tracking/registry URI or experiment (directly or through
    MLflow's fluent API) must not leave later tests, or the processes they start, pointed at
    its server after that server is stopped."""
    import os

    import mlflow

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
    env = {k: os.environ.get(k) for k in keys}
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    registry_set = registry != tracking or env["MLFLOW_REGISTRY_URI"] is not None
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry if registry_set else "")  # "": follow the tracking URI again
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
