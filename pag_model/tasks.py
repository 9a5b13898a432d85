"""The task table: the one place a task's name maps to its outputs, fields, loss and metrics.

    spec = TASKS["depth"]
    spec.channels(num_classes)        # 1: the head's output channels
    spec.target_fields                # ("depth", "depth_valid"): batch keys training reads
    spec.eval_fields                  # (): more keys the benchmark needs at evaluation
    spec.loss(outputs, batch)         # Eq. 9 on the network's outputs
    spec.predict(outputs)             # (B, H, W) depth in metres
    spec.meter(MeterSettings(...))    # delta1..3, absrel, ... (pag_model.task_meters)

Tasks (PAG paper, Sec. 4; batch layouts as the data pipeline yields them):

| task     | output (B, C, H, W)          | prediction               | loss   | benchmark            |
|----------|------------------------------|--------------------------|--------|----------------------|
| boundary | 1 fused logit + side logits  | sigmoid (B, H, W)        | Eq. 7  | BSDS ODS/OIS/AP      |
| semantic | K class logits               | argmax (B, H, W)         | Eq. 8  | mIoU, acc, (iIoU)    |
| depth    | 1 log depth                  | exp, metres (B, H, W)    | Eq. 9  | delta_k, errors      |
| normals  | 3 unit vector                | normalised (B, 3, H, W)  | Eq. 10 | angular error        |

The network builds its heads from `spec.head`, the losses and the evaluation read the
table, and the data pipeline's field lists come from `target_fields(tasks)` and
`eval_fields(tasks, available)`. Nothing else dispatches on a task's name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pag_model.heads import BoundaryHead, DenseHead, HeadOutputs, HeadShape, NormalsHead
from pag_model.losses import IGNORE, boundary_loss, depth_loss, normal_loss, semantic_loss
from pag_model.task_meters import (
    BoundaryTaskMeter,
    DepthTaskMeter,
    MeterSettings,
    NormalsTaskMeter,
    SemanticTaskMeter,
    TaskMeter,
)

Batch = Mapping[str, torch.Tensor]
Outputs = HeadOutputs


@dataclass(frozen=True)
class TaskSpec:
    """Everything the library knows about one task.

    Args:
        name: the task's name: its key in TASKS, in the network's outputs and in metric names.
        channels: num_classes -> output channels of the head (raises for an impossible K).
        head: (HeadShape, channels) -> the head module; its forward(features) returns a dict
            of outputs, `name` among them.
        target_fields: batch keys the loss reads (training and evaluation).
        eval_fields: batch keys the benchmark needs at evaluation besides the targets.
        optional_eval_fields: batch keys the meter uses when the split has them.
        loss: (outputs, batch) -> scalar loss (the paper's equation for this task).
        predict: outputs -> prediction in the benchmark's units (see the table above).
        meter: MeterSettings -> a fresh TaskMeter (`pag_model.task_meters`).
        label_changes: (batch, radius) -> (near (B, H, W) bool, counted (B, H, W) bool): the
            pixels within `radius` of a ground-truth change and the pixels that count, for
            the ponder ratio; None where the task has no labels that change.
    """

    name: str
    channels: Callable[[int], int]
    head: Callable[[HeadShape, int], nn.Module]
    target_fields: tuple[str, ...]
    eval_fields: tuple[str, ...]
    optional_eval_fields: tuple[str, ...]
    loss: Callable[[Outputs, Batch], torch.Tensor]
    predict: Callable[[Outputs], torch.Tensor]
    meter: Callable[[MeterSettings], TaskMeter]
    label_changes: Optional[Callable[[Batch, int], tuple[torch.Tensor, torch.Tensor]]] = None


def _one_channel(num_classes: int) -> int:
    return 1


def _class_channels(num_classes: int) -> int:
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 for the semantic task, got {num_classes}")
    return num_classes


def _three_channels(num_classes: int) -> int:
    return 3


def _boundary_head(shape: HeadShape, channels: int) -> nn.Module:
    return BoundaryHead("boundary", shape.side_channels, shape.side_strides, shape.top_channels, shape.width, shape.stride, upsample=shape.upsample)


def _semantic_head(shape: HeadShape, channels: int) -> nn.Module:
    return DenseHead("semantic", shape.top_channels, channels, shape.width, shape.stride, upsample=shape.upsample)


def _depth_head(shape: HeadShape, channels: int) -> nn.Module:
    return DenseHead("depth", shape.top_channels, channels, shape.width, shape.stride, upsample=shape.upsample)


def _normals_head(shape: HeadShape, channels: int) -> nn.Module:
    return NormalsHead("normals", shape.top_channels, channels, shape.width, shape.stride, upsample=shape.upsample)


def _boundary_loss(outputs: Outputs, batch: Batch) -> torch.Tensor:
    """Eq. 7 summed over the side outputs and the fusion."""
    return boundary_loss(list(outputs["boundary_sides"]) + [outputs["boundary"]], batch["boundary"])


def _semantic_loss(outputs: Outputs, batch: Batch) -> torch.Tensor:
    return semantic_loss(outputs["semantic"], batch["semantic"])


def _depth_loss(outputs: Outputs, batch: Batch) -> torch.Tensor:
    return depth_loss(outputs["depth"], batch["depth"], batch["depth_valid"])


def _normal_loss(outputs: Outputs, batch: Batch) -> torch.Tensor:
    return normal_loss(outputs["normals"], batch["normals"], batch["normals_valid"])


def _boundary_probability(outputs: Outputs) -> torch.Tensor:
    """(B, 1, H, W) fused logits -> (B, H, W) boundary probability."""
    return torch.sigmoid(outputs["boundary"][:, 0].float())


def _class_ids(outputs: Outputs) -> torch.Tensor:
    """(B, K, H, W) logits -> (B, H, W) int64 class ids."""
    return outputs["semantic"].argmax(dim=1)


def _metres(outputs: Outputs) -> torch.Tensor:
    """(B, 1, H, W) log depth -> (B, H, W) depth in metres."""
    return outputs["depth"][:, 0].float().exp()


def _unit_normals(outputs: Outputs) -> torch.Tensor:
    """(B, 3, H, W) -> unit vectors (the head normalises already; this keeps it so after casts)."""
    return F.normalize(outputs["normals"].float(), dim=1, eps=1e-6)


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, H, W) bool -> pixels within `radius` (Chebyshev distance) of a True pixel."""
    k = 2 * radius + 1
    return F.max_pool2d(mask[:, None].float(), k, stride=1, padding=radius)[:, 0] > 0


def semantic_changes(batch: Batch, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels whose (2 radius + 1)^2 window holds two different labelled classes; labelled pixels count.

    Unlabelled (IGNORE) pixels are skipped, so a change across a thin unlabelled band
    between two objects (common in NYUv2) still counts as a change.
    """
    labels = batch["semantic"]
    lab = labels.double()
    valid = labels != IGNORE
    k = 2 * radius + 1
    hi = F.max_pool2d(torch.where(valid, lab, -1.0)[:, None], k, stride=1, padding=radius)[:, 0]
    lo = -F.max_pool2d(torch.where(valid, -lab, -1e9)[:, None], k, stride=1, padding=radius)[:, 0]
    return (hi >= 0) & (hi != lo), valid


def boundary_changes(batch: Batch, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels within `radius` of a boundary any annotator drew (else of the training label's positives).

    Every pixel counts: a boundary map has no unlabelled pixels at evaluation.
    """
    if "boundary_annotators" in batch:
        edges = batch["boundary_annotators"].bool().any(dim=1)
    else:
        edges = batch["boundary"] == 1
    return _dilate(edges, radius), torch.ones_like(edges)


TASKS: dict[str, TaskSpec] = {
    "boundary": TaskSpec(
        name="boundary",
        channels=_one_channel,
        head=_boundary_head,
        target_fields=("boundary",),
        eval_fields=("boundary_annotators",),
        optional_eval_fields=(),
        loss=_boundary_loss,
        predict=_boundary_probability,
        meter=BoundaryTaskMeter,
        label_changes=boundary_changes,
    ),
    "semantic": TaskSpec(
        name="semantic",
        channels=_class_channels,
        head=_semantic_head,
        target_fields=("semantic",),
        eval_fields=(),
        optional_eval_fields=("instances",),
        loss=_semantic_loss,
        predict=_class_ids,
        meter=SemanticTaskMeter,
        label_changes=semantic_changes,
    ),
    "depth": TaskSpec(
        name="depth",
        channels=_one_channel,
        head=_depth_head,
        target_fields=("depth", "depth_valid"),
        eval_fields=(),
        optional_eval_fields=(),
        loss=_depth_loss,
        predict=_metres,
        meter=DepthTaskMeter,
    ),
    "normals": TaskSpec(
        name="normals",
        channels=_three_channels,
        head=_normals_head,
        target_fields=("normals", "normals_valid"),
        eval_fields=(),
        optional_eval_fields=(),
        loss=_normal_loss,
        predict=_unit_normals,
        meter=NormalsTaskMeter,
    ),
}


def check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    """`tasks` as a tuple after checking it names at least one known task, each once."""
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError(f"tasks must name at least one of {', '.join(TASKS)}")
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks {list(tasks)} name a task twice")
    return tasks


def target_fields(tasks: Sequence[str]) -> list[str]:
    """The batch keys training on `tasks` reads, in task order."""
    return [f for t in check_tasks(tasks) for f in TASKS[t].target_fields]


def eval_fields(tasks: Sequence[str], available: Optional[Sequence[str]] = None) -> list[str]:
    """The batch keys evaluating `tasks` reads: targets, required extras, optional extras present.

    Args:
        tasks: task names.
        available: the fields the split has (e.g. from the shard manifest); None = all.
            A required field missing from it raises, naming the field and the task.
    """
    fields = target_fields(tasks)
    for task in check_tasks(tasks):
        spec = TASKS[task]
        if available is not None:
            missing = [f for f in spec.target_fields + spec.eval_fields if f not in available]
            if missing:
                raise ValueError(f"evaluating {task!r} needs fields {missing}; the split has {sorted(available)}")
        fields += spec.eval_fields
        fields += [f for f in spec.optional_eval_fields if available is None or f in available]
    return fields


def task_loss(
    outputs: Outputs,
    batch: Batch,
    tasks: Sequence[str],
    weights: Optional[Mapping[str, float]] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the tasks' losses; returns (total, {task: loss detached}).

    `outputs` is PAGNet's output dict; `batch` holds each task's `target_fields`.
    """
    weights = weights or {}
    parts = {task: TASKS[task].loss(outputs, batch) for task in check_tasks(tasks)}
    total = sum(weights.get(t, 1.0) * v for t, v in parts.items())
    return total, {k: v.detach() for k, v in parts.items()}
