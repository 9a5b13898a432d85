"""One evaluation for every task: full-size images -> model -> task meters -> flat metrics.

    evaluator = Evaluator(net, MeterSettings(num_classes=40))
    for batch in batches:                  # image (B, 3, H, W) + each task's eval fields
        step = evaluator.update(batch)     # step.predictions, step.ponder for pictures
    metrics = evaluator.compute()          # {"semantic/miou": ..., "macs_ratio": ..., ...}

Images of any size. The network needs H and W divisible by its output stride (8), so each
batch is padded at the bottom and right to the next multiple and every output is cropped
back to (H, W) before it is scored: the benchmarks score the original pixels, all of them
(BSDS 321x481 and 481x321, 2D-3D-S panoramas whose height is not a multiple of 8).
Padding is zeros in the normalised input, i.e. the ImageNet mean colour: the training crops
are padded with that colour where they overhang the image (`augment.py`), so the network has
seen such borders, and with a boundary label of "ignore" there it was not taught to fire at
them; it is also DeepLab's evaluation convention. Padding only bottom and right keeps every
original pixel on the same stride-8 grid as in an unpadded run. `padding="replicate"` is
the alternative (no artificial colour step, but a pattern training never showed).

A batch holds images of one size (the data pipeline cannot stack others). Images of
different sizes, and BSDS images (which differ in their number of annotators), come one per
batch; batching never changes a prediction, since each image is padded only to its own
size's next multiple and frozen BatchNorm mixes nothing between images.

Computation is what the network evaluated on the padded input (dense layers in full,
gated 3x3 convolutions at active pixels; `pag_model.flops.count_macs`), per image, and the
ratio to the same network with every gate open. The ponder map (sum of the binary gate
masks, Sec. 3.3) is cropped like the outputs; the ponder ratio is the mean ponder value
within `ponder_radius` pixels of a ground-truth change divided by the mean elsewhere, on the
first task of the model with labels that change (`TaskSpec.label_changes`: semantic labels,
or BSDS boundaries). No Ray, no MLflow, no files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pag_model.blocks import PAGBottleneck
from pag_model.flops import count_macs, ponder_maps
from pag_model.metrics import ComputationMeter
from pag_model.task_meters import MeterSettings, TaskMeter
from pag_model.tasks import TASKS, check_tasks

PONDER_RADIUS = 8  # pixels: one output-stride cell, the gates' resolution
PADDINGS = ("constant", "replicate")


def pad_to_multiple(images: torch.Tensor, multiple: int, mode: str = "constant") -> torch.Tensor:
    """(B, C, H, W) -> (B, C, ceil(H/m) m, ceil(W/m) m), padded at the bottom and right.

    Args:
        images: normalised images.
        multiple: the output stride.
        mode: "constant" (zeros: the mean colour of normalised images) or "replicate".
    """
    if mode not in PADDINGS:
        raise ValueError(f"padding {mode!r}: expected one of {', '.join(PADDINGS)}")
    if images.dim() != 4:
        raise ValueError(f"images: expected (B, C, H, W), got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not pad_h and not pad_w:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)


def crop_outputs(outputs: Mapping[str, object], size: tuple[int, int]) -> dict[str, object]:
    """Every (B, C, H', W') output, and every tensor in a list of them, cropped to (H, W) at the top left."""
    h, w = size
    cropped: dict[str, object] = {}
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor):
            cropped[key] = value[..., :h, :w]
        else:
            cropped[key] = [v[..., :h, :w] for v in value]
    return cropped


@torch.no_grad()
def predict_full_size(net: nn.Module, images: torch.Tensor, padding: str = "constant") -> dict[str, object]:
    """The network's outputs for images of any size: pad to the output stride, run, crop back."""
    padded = pad_to_multiple(images, net.output_stride, padding)
    return crop_outputs(net(padded), tuple(images.shape[-2:]))


@dataclass
class EvalStep:
    """What one evaluated batch gave, for pictures and logs.

    Args:
        outputs: the network's outputs cropped to the images' (H, W).
        predictions: per task, `TaskSpec.predict(outputs)` (what the meters scored).
        ponder: (B, H, W) sum of the gate masks, or None for a model without gates.
        macs: (B,) multiply-adds spent per image; dense_macs: (B,) with every gate open.
    """

    outputs: dict[str, object]
    predictions: dict[str, torch.Tensor]
    ponder: Optional[torch.Tensor]
    macs: torch.Tensor
    dense_macs: torch.Tensor


class Evaluator:
    """Scores a network batch by batch; compute() gives the flat metrics dict.

    Metric names: "<task>/<name>" from each task meter's KEYS (boundary/ods, ois, ap,
    ods_threshold; semantic/miou, pixel_acc, mean_acc and, with Cityscapes instances, iiou,
    category_iou, category_iiou; depth/delta1..3, absrel, sqrel, rmse, rmse_log, log10;
    normals/mean, median, rmse, within_11_25, within_22_5, within_30), then macs, flops,
    dense_macs, macs_ratio, density/<gated block>, images, and for gated models
    ponder/near_boundary, ponder/interior, ponder/boundary_ratio.
    """

    def __init__(
        self,
        net: nn.Module,
        settings: MeterSettings,
        tasks: Optional[Sequence[str]] = None,
        ponder_radius: int = PONDER_RADIUS,
        padding: str = "constant",
    ) -> None:
        """
        Args:
            net: a PAGNet (dense-masked or perforated); it is put in eval mode for each batch
                and its mode restored afterwards.
            settings: what the meters need (class count, names, BSDS workers).
            tasks: the tasks to score; None = all of the network's tasks.
            ponder_radius: pixels around a ground-truth change that count as near it.
            padding: "constant" (default, see the module docstring) or "replicate".
        """
        if padding not in PADDINGS:
            raise ValueError(f"padding {padding!r}: expected one of {', '.join(PADDINGS)}")
        if ponder_radius < 0:
            raise ValueError(f"ponder_radius must be >= 0, got {ponder_radius}")
        self.net = net
        self.tasks = check_tasks(net.tasks if tasks is None else tasks)
        missing = [t for t in self.tasks if t not in net.tasks]
        if missing:
            raise ValueError(f"tasks {missing} are not among the network's tasks {list(net.tasks)}")
        self.padding = padding
        self.ponder_radius = int(ponder_radius)
        self.meters: dict[str, TaskMeter] = {t: TASKS[t].meter(settings) for t in self.tasks}
        self.computation = ComputationMeter()
        self.gated = any(isinstance(m, PAGBottleneck) for m in net.modules())
        self.ponder_task = next((t for t in self.tasks if TASKS[t].label_changes is not None), None)
        self.images = 0
        self.ponder_sums = {"near": 0.0, "near_pixels": 0.0, "far": 0.0, "far_pixels": 0.0}

    def _check_batch(self, batch: Mapping[str, torch.Tensor]) -> tuple[int, int]:
        if "image" not in batch:
            raise KeyError(f"evaluation batch needs 'image'; it has {sorted(batch)}")
        images = batch["image"]
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"batch['image']: expected (B, 3, H, W), got {tuple(images.shape)}")
        size = tuple(images.shape[-2:])
        for task in self.tasks:
            for field in TASKS[task].target_fields + TASKS[task].eval_fields:
                if field not in batch:
                    raise KeyError(f"evaluating {task!r} needs batch field {field!r}; the batch has {sorted(batch)}")
        for key, value in batch.items():
            if key != "image" and tuple(value.shape[-2:]) != size:
                raise ValueError(f"batch[{key!r}] has spatial size {tuple(value.shape[-2:])}, the image {size}")
        return size

    @torch.no_grad()
    def update(self, batch: Mapping[str, torch.Tensor]) -> EvalStep:
        """Score one batch: image (B, 3, H, W) normalised, any H and W, plus the tasks' fields."""
        size = self._check_batch(batch)
        device = next(self.net.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        was_training = self.net.training
        self.net.eval()
        try:
            padded = pad_to_multiple(batch["image"], self.net.output_stride, self.padding)
            report = count_macs(self.net, padded)
            ponder = ponder_maps(self.net, tuple(padded.shape[-2:]))["overall"] if self.gated else None
        finally:
            self.net.train(was_training)
        outputs = crop_outputs(report.outputs, size)
        predictions = {t: TASKS[t].predict(outputs) for t in self.tasks}
        for task, meter in self.meters.items():
            meter.update(predictions[task], batch)
        self.computation.update(report.macs, report.dense_macs, report.densities)
        self.images += batch["image"].shape[0]
        if ponder is not None:
            ponder = ponder[..., : size[0], : size[1]]
            if self.ponder_task is not None:
                self._add_ponder(ponder, batch)
        return EvalStep(outputs, predictions, ponder, report.macs, report.dense_macs)

    def _add_ponder(self, ponder: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> None:
        near, counted = TASKS[self.ponder_task].label_changes(batch, self.ponder_radius)
        far = ~near & counted
        near = near & counted
        self.ponder_sums["near"] += float(ponder[near].sum())
        self.ponder_sums["near_pixels"] += float(near.sum())
        self.ponder_sums["far"] += float(ponder[far].sum())
        self.ponder_sums["far_pixels"] += float(far.sum())

    def merge(self, other: "Evaluator") -> "Evaluator":
        """Add another shard's counts (same tasks); returns self."""
        if other.tasks != self.tasks:
            raise ValueError(f"Evaluator.merge: tasks {other.tasks} differ from {self.tasks}")
        for task, meter in self.meters.items():
            meter.merge(other.meters[task])
        self.computation.merge(other.computation)
        self.images += other.images
        for key, value in other.ponder_sums.items():
            self.ponder_sums[key] += value
        return self

    def compute(self) -> dict[str, float]:
        """The flat metrics dict (names in the class docstring)."""
        if self.images == 0:
            raise ValueError("evaluation saw no images (empty split?)")
        out: dict[str, float] = {}
        for task, meter in self.meters.items():
            out.update({f"{task}/{key}": float(value) for key, value in meter.compute().items()})
        out.update({key: float(value) for key, value in self.computation.compute().items()})
        out["images"] = float(self.images)
        s = self.ponder_sums
        if s["near_pixels"] and s["far_pixels"] and s["far"] > 0:
            out["ponder/near_boundary"] = s["near"] / s["near_pixels"]
            out["ponder/interior"] = s["far"] / s["far_pixels"]
            out["ponder/boundary_ratio"] = out["ponder/near_boundary"] / out["ponder/interior"]
        return out

    def close(self) -> None:
        """Stop the BSDS matching processes, if any."""
        for meter in self.meters.values():
            meter.close()


def evaluate(
    net: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    settings: MeterSettings,
    tasks: Optional[Sequence[str]] = None,
    ponder_radius: int = PONDER_RADIUS,
    padding: str = "constant",
) -> dict[str, float]:
    """All of `batches` through one Evaluator; returns its metrics dict."""
    evaluator = Evaluator(net, settings, tasks, ponder_radius, padding)
    try:
        for batch in batches:
            evaluator.update(batch)
        return evaluator.compute()
    finally:
        evaluator.close()
