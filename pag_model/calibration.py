"""Density calibration: make each gated layer's evaluated density equal its target rho.

Training samples the gates with Gumbel noise; evaluation takes the argmax of the logits, so a
layer whose training density sits at rho can evaluate denser or sparser (0-0.07 above rho
was measured on the demo). `calibrate_densities` shifts each learned gate's "compute" logit by
a constant, layer after layer from the input up (a layer's input depends on the masks below
it), so that on the calibration images the fraction of decisions with logit(compute) +
shift > logit(skip) is rho: shift = minus the (1 - rho) quantile of logit(compute) - logit(skip)
(halfway between neighbouring decisions).
A constant shift keeps the order of the pixels within a layer, so which pixels compute first
(the ponder map's shape) is the network's own; only how many is set. Pixel gates decide per
pixel, per-image gates per image, static gates per position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from pag_model.blocks import pag_blocks
from pag_model.sparsity import check_rho


@dataclass
class LayerCalibration:
    """One layer: its density on the calibration images before and after, and the shift."""

    layer: str
    before: float
    after: float
    shift: float


@torch.no_grad()
def calibrate_densities(net: nn.Module, images: Iterable[torch.Tensor], rho: float) -> list[LayerCalibration]:
    """Shift every learned gate of `net` so its argmax density on `images` is `rho`.

    Args:
        net: a network with PAGBottlenecks (gates in "learned" mode are calibrated, others kept).
        images: (B, 3, H, W) normalised image batches (H, W multiples of the output stride);
            materialised once and run through the network once per gated layer.
        rho: the target density in (0, 1].

    Returns:
        One LayerCalibration per calibrated layer, in network order. `net` is modified in place
        (its gate biases) and left in the train/eval mode it had.
    """
    rho = check_rho(rho)
    batches = list(images)
    if not batches:
        raise ValueError("calibrate_densities: no calibration images")
    was_training = net.training
    net.eval()
    report = []
    try:
        for name, block in pag_blocks(net):
            gate = block.gate
            if gate.mode != "learned":
                continue
            margins = []

            def record(module: nn.Module, inputs: tuple, output: torch.Tensor, sink: list = margins) -> None:
                logits = module.logits(inputs[0])
                sink.append((logits[:, 1] - logits[:, 0]).flatten().float())

            handle = gate.register_forward_hook(record)
            try:
                for batch in batches:
                    net(batch)
            finally:
                handle.remove()
            margin = torch.cat(margins)
            before = float((margin > 0).float().mean())
            shift = _shift_for(margin, rho)
            _add_to_compute_logit(gate, shift)
            after = float((margin + shift > 0).float().mean())
            report.append(LayerCalibration(name, before, after, shift))
    finally:
        net.train(was_training)
    return report


def _shift_for(margin: torch.Tensor, rho: float) -> float:
    """The shift s with round(rho * n) of the n margins above -s: -s halfway between the
    largest skipped margin and the smallest computed one (no decision sits on the edge)."""
    ordered = margin.sort().values
    skipped = int(round((1.0 - rho) * ordered.numel()))
    if skipped == 0:
        return 1.0 - float(ordered[0])
    if skipped == ordered.numel():
        return -1.0 - float(ordered[-1])
    return -0.5 * float(ordered[skipped - 1] + ordered[skipped])


def _add_to_compute_logit(gate: nn.Module, shift: float) -> None:
    """logit(compute) += shift for every decision of `gate`."""
    if gate.granularity == "static":
        gate.static_logits[1] += shift
    else:
        gate.conv.bias[1] += shift
