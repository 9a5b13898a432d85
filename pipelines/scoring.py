"""Scoring a model for the pipeline: the library's evaluation plus pictures for MLflow.

`evaluate_model(net, batches, tasks, num_classes)` runs `pag_model.evaluation.Evaluator`
(full-size images padded to the output stride and cropped back, gates by argmax, every task's
benchmark meter, multiply-adds actually spent, the ponder ratio) over the evaluation reader's
batches, and writes `pred_<i>.png` (ground truth beside prediction) and `ponder_<i>.png` for
the first images. The metric names are the library's (`Evaluator`'s docstring).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from pag_model import PAGBottleneck
from pag_model.evaluation import EvalStep, Evaluator
from pag_model.losses import IGNORE
from pag_model.task_meters import MeterSettings
from pipelines.atomic import atomic_path


@torch.no_grad()
def evaluate_model(
    net: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    tasks: Sequence[str],
    num_classes: int,
    png_dir: Optional[str | Path] = None,
    max_pngs: int = 4,
    class_names: Optional[Sequence[str]] = None,
) -> dict[str, float]:
    """Metrics of `net` (a PAGNet) over `batches`, keys like "semantic/miou", "macs".

    Writes PNGs of the first `max_pngs` images to `png_dir` when given. The network's
    train/eval mode is restored afterwards.
    """
    settings = MeterSettings(num_classes=num_classes, class_names=tuple(class_names) if class_names else None)
    evaluator = Evaluator(net, settings, tasks)
    layers = sum(isinstance(m, PAGBottleneck) for m in net.modules())
    try:
        for i, batch in enumerate(batches):
            step = evaluator.update(batch)
            if png_dir is not None and i < max_pngs:
                _save_pngs(Path(png_dir), i, batch, step, layers)
        return evaluator.compute()
    finally:
        evaluator.close()


def _palette() -> np.ndarray:
    """256 fixed colours (seeded), black for the ignore label."""
    rng = np.random.default_rng(12345)
    colours = rng.integers(40, 256, size=(256, 3), dtype=np.uint8)
    colours[IGNORE] = 0
    return colours


def _scaled(x: torch.Tensor) -> np.ndarray:
    """(H, W) -> uint8 grey, min..max stretched (a picture, not a measurement)."""
    x = x.float().cpu()
    span = (x.max() - x.min()).clamp_min(1e-6)
    return (((x - x.min()) / span).numpy() * 255).astype(np.uint8)


def _save_pngs(out: Path, i: int, batch: Mapping[str, torch.Tensor], step: EvalStep, layers: int) -> None:
    """pred_<i>.png: ground truth | prediction of the first task; ponder_<i>.png: the ponder map."""
    out.mkdir(parents=True, exist_ok=True)
    if "semantic" in step.predictions:
        palette = _palette()
        gt = palette[batch["semantic"][0].cpu().numpy().astype(np.int64)]
        pred = palette[step.predictions["semantic"][0].cpu().numpy()]
    else:
        task = next(iter(step.predictions))
        pred = step.predictions[task][0]
        pred = _scaled(pred.norm(dim=0) if pred.dim() == 3 else pred)
        gt = _scaled(batch[task][0].float().norm(dim=0) if batch[task].dim() == 4 else batch[task][0])
    panel = np.concatenate([gt, np.zeros((gt.shape[0], 4) + gt.shape[2:], np.uint8), pred], axis=1)
    with atomic_path(out / f"pred_{i:02d}.png") as tmp:
        Image.fromarray(panel).save(tmp)
    if step.ponder is not None:
        save_ponder_png(step.ponder[0], out / f"ponder_{i:02d}.png", max_value=float(layers))


def save_ponder_png(ponder: torch.Tensor, path: str | Path, max_value: Optional[float] = None) -> Path:
    """Render one (H, W) ponder map to a colour PNG (viridis, 0..max_value), atomically."""
    from matplotlib import colormaps

    array = ponder.detach().cpu().float().numpy()
    if array.ndim != 2:
        raise ValueError(f"ponder map must be (H, W), got shape {array.shape}")
    top = float(max_value if max_value is not None else max(array.max(), 1.0))
    rgb = colormaps["viridis"](np.clip(array / top, 0.0, 1.0))[..., :3]
    with atomic_path(path) as tmp:
        Image.fromarray((rgb * 255).astype(np.uint8)).save(tmp)
    return Path(path)
