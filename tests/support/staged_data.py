"""Test helpers for the staged pipeline: tiny NYUv2-format shards and a shrunk demo config."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pipelines.config import PipelineConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo.yaml"


def make_shards(root: Path, train: int = 8, test: int = 2, size: tuple[int, int] = (48, 64)) -> Path:
    """Generated NYUv2 files converted to shards under root/shards; returns the shard dir."""
    from pipelines.datasets.convert import convert
    from pipelines.datasets.write_formats import write_dataset

    raw = root / "raw"
    write_dataset("nyuv2", raw, n_per_split={"train": train, "test": test}, size=size, seed=0)
    out = root / "shards"
    convert("nyuv2", str(raw), str(out))
    return out


def tiny_overrides(shards: Path, storage: Path, stages: str, workers: int = 1) -> list[str]:
    """configs/demo.yaml shrunk to seconds: small crops, few images, the given stage list, the
    small `resnet_tiny` on two tasks with the paper's SGD (what these tests exercise; the
    demo's own model and optimiser are tested by the demo's test)."""
    return [
        "model.backbone=resnet_tiny",
        "model.tasks=[semantic, depth]",
        "model.head_upsample=deconv",
        "train.optimizer=sgd",
        "train.gate_lr_mult=1.0",
        f"data.uri={shards}",
        f"storage_path={storage}",
        "data.crop=[32, 32]",
        "data.eval_images=2",
        "model.head_channels=8",
        "train.batch_size=2",
        "train.log_every=1",
        "train.checkpoint_every=2",
        f"scaling.num_workers={workers}",
        f"stages={stages}",
    ]


def tiny_config(shards: Path, storage: Path, stages: str, workers: int = 1, extra: Sequence[str] = ()) -> PipelineConfig:
    return load_config(DEMO, [*tiny_overrides(shards, storage, stages, workers), *extra])


TWO_STAGES = (
    "[{name: base, iterations: 2, lr: 0.01},"
    " {name: rho-0_5, iterations: 2, lr: 0.01, multipool: res5, gated: [res4, res5], rho: 0.5, lam: 0.002}]"
)
