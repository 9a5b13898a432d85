"""Loading a trained PAGNet: from a checkpoint directory or a registered model URI."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

from torch import nn

from pipelines.checkpoint import load_checkpoint_model
from pipelines.tracking.scope import mlflow_scope


def load_model(model: str, tracking_uri: Optional[str] = None) -> nn.Module:
    """A PAGNet from a checkpoint directory or a `models:/...` URI, on CPU, in eval mode."""
    if model.startswith("models:/"):
        import mlflow

        with mlflow_scope(tracking_uri) if tracking_uri else nullcontext():
            exported = mlflow.pytorch.load_model(model, map_location="cpu")
        return exported.net.eval()
    return load_checkpoint_model(model)
