"""Quiet run ends: MLflow prints "View run ... at: <tracking URI>" whenever a run ends
against a server, and the URI may carry credentials (user:password@host).

`quiet_run_urls()` switches that print off for a block through MLflow's documented
environment variable, and gives the caller's setting back afterwards. Everything else the
pipeline does with MLflow goes through `MlflowClient` objects: no process-wide MLflow state
(tracking or registry URI, active run or experiment) is read or set.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

QUIET_URLS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


@contextmanager
def quiet_run_urls() -> Iterator[None]:
    """Within the block, MLflow does not print run URLs (which may hold credentials)."""
    saved = os.environ.get(QUIET_URLS)
    os.environ[QUIET_URLS] = "true"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(QUIET_URLS, None)
        else:
            os.environ[QUIET_URLS] = saved
