"""Scoring a model for the pipeline: the library's evaluation plus pictures for MLflow.

`evaluate_model(net, batches, tasks, num_classes)` runs `pag_model.evaluation.Evaluator`
(full-size images padded to the output stride and cropped back, gates by argmax, every task's
benchmark meter, multiply-adds actually spent, the ponder ratio) over the evaluation reader's
batches, and writes report figures of the first images (`pipelines.pictures`): `pred_<i>.png`
(input | ground truth | prediction per task) and `ponder_<i>.png` (input | ponder map). The
metric names are the library's (`Evaluator`'s docstring).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import torch
from torch import nn

from pag_model import PAGBottleneck
from pag_model.evaluation import EvalStep, Evaluator
from pag_model.task_meters import MeterSettings
from pipelines.pictures import ponder_figure, prediction_figure


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
                _save_pngs(Path(png_dir), i, batch, step, layers, num_classes, class_names)
        return evaluator.compute()
    finally:
        evaluator.close()


def _save_pngs(
    out: Path,
    i: int,
    batch: Mapping[str, torch.Tensor],
    step: EvalStep,
    layers: int,
    num_classes: int,
    class_names: Optional[Sequence[str]],
) -> None:
    """pred_<i>.png: input | ground truth | prediction per task; ponder_<i>.png: input | ponder map."""
    image = batch["image"][0]
    targets = {k: v[0] for k, v in batch.items() if isinstance(v, torch.Tensor)}
    predictions = {task: p[0] for task, p in step.predictions.items()}
    prediction_figure(image, targets, predictions, out / f"pred_{i:02d}.png", class_names, num_classes)
    if step.ponder is not None:
        ponder_figure(image, step.ponder[0], layers, out / f"ponder_{i:02d}.png")
