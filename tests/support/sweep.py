"""Test fixtures for sweeps: tiny NYUv2-format shards, a MultiPool base checkpoint, a sweep YAML.

The data is the real path: scenes written as `nyu_depth_v2_labeled.mat` by the format
writer, converted to Parquet shards by the converter. The base checkpoint is what the
training loop writes (`state.pt`), holding a randomly initialised resnet_tiny PAGNet with
MultiPool at res5, which is all the sparsity stages need to start from.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

NUM_CLASSES = 40
MODEL = {
    "backbone": "resnet_tiny",
    "tasks": ["semantic"],
    "num_classes": NUM_CLASSES,
    "multipool_variant": "pag",
    "dilations": [0, 1, 2, 4],
    "pretrained": None,
    "head_channels": 16,
}


def make_shards(root: Path) -> str:
    """6 train + 2 test scenes of 48x64 as NYUv2 files, converted to shards; their URI."""
    from pipelines.datasets.convert import convert
    from pipelines.datasets.write_formats import write_dataset

    raw = write_dataset("nyuv2", root / "raw", n_per_split={"train": 6, "test": 2}, size=(48, 64), seed=3)
    out = root / "shards"
    convert("nyuv2", str(raw), str(out))
    return str(out)


def make_base_checkpoint(directory: Path) -> str:
    """A training-loop checkpoint of a MultiPool (res5) model without gates."""
    from pipelines.checkpoint import build_model, save_state

    stage = {"name": "multipool", "multipool": "res5", "gated": []}
    net = build_model(MODEL, stage)
    directory.mkdir(parents=True, exist_ok=True)
    save_state(directory, {"model": net.state_dict(), "model_config": MODEL, "stage": stage, "iteration": 0})
    return str(directory)


def sweep_yaml(
    path: Path,
    data_uri: str,
    storage: Path,
    base: str,
    sweep: dict[str, Any],
    tracking_uri: str | None = None,
    iterations: int = 3,
) -> Path:
    """A sweep YAML with tiny stages (32 px crops, `iterations` SGD steps, 1 worker x 0.45 CPU)."""
    config = {
        "storage_path": str(storage),
        "model": MODEL,
        "data": {"uri": data_uri, "train_split": "train", "eval_split": "test", "crop": [32, 32], "eval_images": 2},
        "train": {"batch_size": 2, "checkpoint_every": iterations, "log_every": iterations, "max_failures": 0, "bf16": False},
        "scaling": {"num_workers": 1, "use_gpu": False, "cpus_per_worker": 0.45},
        "tracking": {
            "tracking_uri": tracking_uri,
            "experiment": f"sweep-test-{sweep['sweep_id']}",
            "registered_model": "pag-test",
            "front_metric": "semantic/miou",
            "budget": 0.9,
        },
        "stages": [
            {"name": "target", "iterations": iterations, "lr": 0.01, "multipool": "res5", "gated": ["res5"], "rho": 0.7, "lam": 0.01}
        ],
        "sweep": {"base": base, **sweep},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def sweep_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Shards and a base checkpoint shared by the session's sweep tests."""
    root = tmp_path_factory.mktemp("sweep-data")
    return {"uri": make_shards(root), "base": make_base_checkpoint(root / "base")}
