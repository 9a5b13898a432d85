"""MLflow's process-wide state, borrowed for one call and given back.

Some MLflow calls have no client form: `mlflow.pytorch.log_model` logs into the active run of
the global tracking URI, `mlflow.register_model` and `mlflow.pytorch.load_model("models:/...")`
read the global registry URI. Setting those globals (and `mlflow.set_experiment`) from library
code would leak into the caller: a notebook's later `MlflowClient()` would talk to our server,
and the environment variables MLflow exports for subprocesses (MLFLOW_TRACKING_URI,
MLFLOW_REGISTRY_URI, MLFLOW_EXPERIMENT_ID) would point every child process at it, even after
that server is gone. `mlflow_scope(uri)` sets them for the block and restores every one after;
`restored_mlflow_globals()` only restores (the test suite wraps every test in it).

MLflow also prints "View run ... at: <tracking URI>" whenever a run ends against a server, and
the URI may carry credentials (user:password@host). `quiet_run_urls()` switches that print off
for a block (both scopes include it), instead of for the caller's whole process.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional

ENV_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
QUIET_URLS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


def _restore_env(saved: dict[str, Optional[str]]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextmanager
def quiet_run_urls() -> Iterator[None]:
    """Within the block, MLflow does not print run URLs (which may hold credentials)."""
    saved = {QUIET_URLS: os.environ.get(QUIET_URLS)}
    os.environ[QUIET_URLS] = "true"
    try:
        yield
    finally:
        _restore_env(saved)


@contextmanager
def restored_mlflow_globals() -> Iterator[None]:
    """Whatever the block does to MLflow's global URIs, active experiment and their
    environment variables is undone when it exits."""
    import mlflow
    from mlflow.tracking import _model_registry, _tracking_service, fluent

    registry_utils = _model_registry.utils
    saved_env = {key: os.environ.get(key) for key in ENV_KEYS}
    saved_tracking = _tracking_service.utils._tracking_uri
    saved_registry = registry_utils._registry_uri
    saved_experiment = fluent._active_experiment_id
    try:
        yield
    finally:
        # set_tracking_uri also resets the tracer provider that caches the URI.
        mlflow.set_tracking_uri(saved_tracking)
        registry_utils._registry_uri = saved_registry
        fluent._active_experiment_id = saved_experiment
        _restore_env(saved_env)


@contextmanager
def mlflow_scope(tracking_uri: str, experiment_id: Optional[str] = None) -> Iterator[None]:
    """Within the block: tracking and registry URI = `tracking_uri`, active experiment =
    `experiment_id` when given. After it: the caller's globals and environment as they were."""
    import mlflow

    with restored_mlflow_globals(), quiet_run_urls():
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        if experiment_id is not None:
            mlflow.set_experiment(experiment_id=experiment_id)
        yield
