"""Scoring a model on evaluation batches: the meters, computation, ponder ratio and PNGs.

`evaluate_model(net, batches, tasks, num_classes)` runs the network in eval mode (gates by
argmax, no Gumbel noise) on every batch and returns flat metrics: the metrics library's
meters per task, multiply-adds per image actually spent (and the ratio to all gates open),
per-layer densities, and the ponder ratio: mean ponder value within `BOUNDARY_RADIUS` pixels
of two different ground-truth labels divided by the mean elsewhere (> 1: more computation
near boundaries, as the paper reports).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import pag_model.metrics as metrics
from pag_model import PAGBottleneck, count_macs, ponder_maps, save_ponder_png
from pag_model.metrics import ComputationMeter
from pipelines.atomic import atomic_path

BOUNDARY_RADIUS = 8  # pixels: one output-stride cell, the gates' resolution
IGNORE = 255


def boundary_mask(labels: torch.Tensor, radius: int = BOUNDARY_RADIUS) -> torch.Tensor:
    """(B, H, W) bool: pixels whose (2 radius + 1)^2 window holds two different valid labels.

    Unlabelled (IGNORE) pixels are skipped, so a change across a thin unlabelled band
    between two objects (common in NYUv2) still counts as a boundary.
    """
    lab = labels.double()
    valid = labels != IGNORE
    k, pad = 2 * radius + 1, radius
    hi = F.max_pool2d(torch.where(valid, lab, -1.0)[:, None], k, stride=1, padding=pad)[:, 0]
    lo = -F.max_pool2d(torch.where(valid, -lab, -1e9)[:, None], k, stride=1, padding=pad)[:, 0]
    return (hi >= 0) & (hi != lo)


def _meters(tasks: Sequence[str], num_classes: int) -> dict[str, Any]:
    factories = {
        "semantic": lambda: metrics.SegmentationMeter(num_classes),
        "depth": lambda: metrics.DepthMeter(),
        "normals": lambda: metrics.NormalsMeter(),
        "boundary": lambda: metrics.BoundaryMeter(),
    }
    return {t: factories[t]() for t in tasks}


def _update(meter: Any, task: str, outputs: dict, batch: dict) -> None:
    if task == "semantic":
        meter.update(outputs["semantic"], batch["semantic"])
    elif task == "depth":
        meter.update(outputs["depth"][:, 0].exp(), batch["depth"], batch["depth_valid"])
    elif task == "normals":
        meter.update(outputs["normals"], batch["normals"], batch["normals_valid"])
    elif task == "boundary":
        meter.update(torch.sigmoid(outputs["boundary"][:, 0]), batch["boundary_annotators"])


@torch.no_grad()
def evaluate_model(
    net: nn.Module,
    batches: Iterator[dict[str, torch.Tensor]],
    tasks: Sequence[str],
    num_classes: int,
    device: torch.device | str = "cpu",
    png_dir: Optional[str | Path] = None,
    max_pngs: int = 4,
) -> dict[str, float]:
    """Metrics of `net` (a PAGNet) over `batches`, keys like "semantic/miou", "macs".

    Writes `pred_<i>.png` and `ponder_<i>.png` for the first `max_pngs` images to `png_dir`.
    The model's train/eval mode is restored afterwards.
    """
    was_training = net.training
    net.eval()
    meters = _meters(tasks, num_classes)
    computation = ComputationMeter()
    images = 0
    near_sum = near_n = far_sum = far_n = 0.0
    gated = any(True for _ in _gated(net))
    for i, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs = net(batch["image"])
        for task, meter in meters.items():
            _update(meter, task, outputs, batch)
        report = count_macs(net, batch["image"])
        computation.update(report.macs, report.dense_macs, report.densities)
        images += batch["image"].shape[0]
        ponder = ponder_maps(net, tuple(batch["image"].shape[-2:]))["overall"] if gated else None
        if ponder is not None and "semantic" in batch:
            near = boundary_mask(batch["semantic"])
            valid = batch["semantic"] != IGNORE
            near_sum += float(ponder[near & valid].sum())
            near_n += float((near & valid).sum())
            far_sum += float(ponder[~near & valid].sum())
            far_n += float((~near & valid).sum())
        if png_dir is not None and i < max_pngs:
            _save_pngs(Path(png_dir), i, batch, outputs, ponder, len(list(_gated(net))))
    if images == 0:
        raise ValueError("evaluation saw no images (empty split, or max_images=0 on an empty set)")
    out: dict[str, float] = {}
    for task, meter in meters.items():
        for key, value in meter.compute().items():
            if isinstance(value, (int, float)) and "/" not in key:  # per-class IoUs left out
                out[f"{task}/{key}"] = float(value)
    out.update({k: float(v) for k, v in computation.compute().items()})
    out["dense_macs"] = out["macs"] / out["macs_ratio"]  # mean MACs with every gate open
    out["images"] = float(images)
    if near_n and far_n and far_sum > 0:
        out["ponder/near_boundary"] = near_sum / near_n
        out["ponder/interior"] = far_sum / far_n
        out["ponder/boundary_ratio"] = (near_sum / near_n) / (far_sum / far_n)
    net.train(was_training)
    return out


def _gated(net: nn.Module):
    return (m for m in net.modules() if isinstance(m, PAGBottleneck))


def _palette(n: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    colours = rng.integers(40, 256, size=(256, 3), dtype=np.uint8)
    colours[IGNORE] = 0
    return colours


def _save_pngs(out: Path, i: int, batch: dict, outputs: dict, ponder: Optional[torch.Tensor], layers: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if "semantic" in outputs:
        palette = _palette(256)
        gt = palette[batch["semantic"][0].cpu().numpy().astype(np.int64)]
        pred = palette[outputs["semantic"][0].argmax(0).cpu().numpy()]
        panel = np.concatenate([gt, np.zeros((gt.shape[0], 4, 3), np.uint8), pred], axis=1)
    else:
        key = next(k for k in ("depth", "normals", "boundary") if k in outputs)
        pred = outputs[key][0].float().cpu()
        pred = pred[0] if pred.shape[0] == 1 else pred.abs().mean(0)
        span = (pred.max() - pred.min()).clamp_min(1e-6)
        panel = (((pred - pred.min()) / span).numpy() * 255).astype(np.uint8)
    with atomic_path(out / f"pred_{i:02d}.png") as tmp:
        Image.fromarray(panel).save(tmp)
    if ponder is not None:
        save_ponder_png(ponder[0], out / f"ponder_{i:02d}.png", max_value=float(layers))
