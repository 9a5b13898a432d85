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
    from pipelines.tracking.scope import restored_mlflow_globals

    with restored_mlflow_globals():
        yield
