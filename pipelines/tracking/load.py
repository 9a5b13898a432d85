"""Loading a trained PAGNet: a checkpoint directory, an exported model, or an MLflow model URI.

    load_model("runs/demo/.../checkpoint_00000080")              # a training checkpoint
    load_model("models:/pag-demo@demo-champion", tracking_uri=...)    # a registered version by alias
    load_model("models:/pag-demo/3", tracking_uri=...)           # ... or by version number
    load_model("runs:/<run_id>/model", tracking_uri=...)         # a logged model

Registered and logged models are the files `pipelines.checkpoint.export_model` writes
(safetensors weights + JSON settings): loading one rebuilds the network from this code and
reads tensors; nothing from the registry is executed. Only MLflow's client API is used.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

from pag_model import PAGNet
from pipelines.checkpoint import load_checkpoint_model, load_exported_model
from pipelines.tracking.redaction import redact_text
from pipelines.tracking.tracker import parse_runs_uri


def check_store_exists(tracking_uri: str) -> None:
    """ValueError when `tracking_uri` is a SQLite store whose file does not exist."""
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri[len("sqlite:///"):])
        if not path.is_file():
            raise ValueError(f"tracking URI {tracking_uri!r}: no MLflow database at {path}")


def parse_models_uri(uri: str) -> tuple[str, Optional[str], Optional[str]]:
    """`models:/NAME@ALIAS` -> (NAME, ALIAS, None); `models:/NAME/VERSION` -> (NAME, None, VERSION)."""
    rest = uri[len("models:/"):]
    if "@" in rest:
        name, _, alias = rest.partition("@")
        if name and alias and "/" not in name:
            return name, alias, None
    else:
        name, _, version = rest.partition("/")
        if name and version.isdigit():
            return name, None, version
    raise ValueError(f"model URI {uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")


def load_model(model: str, tracking_uri: Optional[str] = None) -> PAGNet:
    """A PAGNet from a checkpoint directory or a `models:/` / `runs:/` URI, on CPU, in eval mode.

    The URI is parsed, and a SQLite store checked to exist, before MLflow is asked anything:
    a typo never creates an empty database (MLflow creates a missing SQLite file on open).

    Raises:
        ValueError: a malformed URI, an MLflow URI without `tracking_uri`, a SQLite store
            that does not exist, or a model the registry does not hold (redacted URI).
        FileNotFoundError: a directory that is neither a checkpoint nor an exported model.
    """
    if not model.startswith(("models:/", "runs:/")):
        return load_checkpoint_model(model)
    if model.startswith("runs:/"):
        run_id, path = parse_runs_uri(model)
        name = alias = version = None
    else:
        name, alias, version = parse_models_uri(model)
    if not tracking_uri:
        raise ValueError(f"model {model!r}: an MLflow model URI needs a tracking URI (--tracking-uri)")
    check_store_exists(tracking_uri)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if name is not None:
        try:
            mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        except MlflowException as err:
            raise ValueError(
                f"model {model!r}: not found in the registry at {redact_text(tracking_uri)} ({redact_text(err.message)})"
            ) from None
        run_id, path = mv.run_id, mv.source.rstrip("/").rsplit("/", 1)[-1]
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, path, tmp)
        return load_exported_model(Path(local))
