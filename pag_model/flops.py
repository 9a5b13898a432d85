"""Computation actually spent, from the masks: multiply-adds per image, and ponder maps.

Dense layers (convolutions, transposed convolutions, linear layers, gate heads, MultiPool's
selector) count in full. A gated 3x3 convolution counts only at its active pixels, and a
MultiPool branch only at the pixels that selected it (all pixels for the w-Avg variant). The
reference "all gates open" count is the same model with every gated 3x3 conv at every pixel.
Multiply-adds (MACs) are reported; FLOPs = 2 x MACs.

The ponder map (PAG paper, Sec. 3.3) is the sum of the binary masks over gated layers, shown
at input resolution: how much of the network each pixel used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import MACRO_BLOCKS, PAGBottleneck
from .multipool import MultiPool

_LAYER_TO_MACRO = {v: k for k, v in MACRO_BLOCKS.items()}


@dataclass
class MacReport:
    """macs and dense_macs (B,) per image; densities {gated block name: (B,)}; the model's outputs."""

    macs: torch.Tensor
    dense_macs: torch.Tensor
    densities: dict[str, torch.Tensor]
    outputs: Any = None

    @property
    def ratio(self) -> torch.Tensor:
        """(B,) macs / dense_macs."""
        return self.macs / self.dense_macs


def conv_macs_per_pixel(conv: nn.Conv2d) -> int:
    """Multiply-adds of one output pixel of a Conv2d (all output channels)."""
    kh, kw = conv.kernel_size
    return conv.out_channels * (conv.in_channels // conv.groups) * kh * kw


def _leaf_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> Optional[torch.Tensor]:
    """(B,) multiply-adds of one dense layer call, or None for layers that cost nothing here."""
    if isinstance(module, nn.Conv2d):
        b = output.shape[0]
        return output.new_full((b,), float(conv_macs_per_pixel(module) * output.shape[2] * output.shape[3]))
    if isinstance(module, nn.ConvTranspose2d):
        x = inputs[0]
        kh, kw = module.kernel_size
        per_in_pixel = module.out_channels * (module.in_channels // module.groups) * kh * kw
        return x.new_full((x.shape[0],), float(per_in_pixel * x.shape[2] * x.shape[3]))
    if isinstance(module, nn.Linear):
        x = inputs[0]
        rows = x[..., 0].numel() // x.shape[0]
        return x.new_full((x.shape[0],), float(module.in_features * module.out_features * rows))
    return None


@torch.no_grad()
def count_macs(model: nn.Module, images: torch.Tensor) -> MacReport:
    """Run `model` on `images` (in its current mode) and count the multiply-adds it spent.

    The forward's outputs come back in the report, so an evaluation runs the model once.
    Works for any nn.Module: plain timm ResNets (everything dense) and PAG networks, in
    dense-masked or perforated mode.
    """
    owned: set[int] = set()
    special: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, PAGBottleneck):
            owned.add(id(m.conv2))
            special.append(m)
        elif isinstance(m, MultiPool):
            owned.update(id(c) for br in m.branches for c in br.modules() if isinstance(c, nn.Conv2d))
            special.append(m)
    dense = images.new_zeros(images.shape[0])
    totals = {"dense": dense}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if id(module) in owned:
            return
        macs = _leaf_macs(module, inputs, output)
        if macs is not None:
            totals["dense"] = totals["dense"] + macs.to(totals["dense"])

    handles = [m.register_forward_hook(hook) for m in model.modules() if len(list(m.children())) == 0]
    try:
        outputs = model(images)
    finally:
        for h in handles:
            h.remove()

    macs = totals["dense"].clone()
    dense_macs = totals["dense"].clone()
    densities: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        if isinstance(m, PAGBottleneck):
            mask = m.gate.last_mask[:, 0]
            full = float(conv_macs_per_pixel(m.conv2) * mask.shape[1] * mask.shape[2])
            density = mask.flatten(1).float().mean(1)
            macs += full * density
            dense_macs += full
            densities[name] = density
        elif isinstance(m, MultiPool):
            sel = m.last_selection
            hw = sel.shape[2] * sel.shape[3]
            for i, branch in enumerate(m.branches):
                convs = [c for c in branch.modules() if isinstance(c, nn.Conv2d)]
                full = float(sum(conv_macs_per_pixel(c) for c in convs) * hw)
                share = sel[:, i].flatten(1).gt(0).float().mean(1)
                macs += full * share
                dense_macs += full * share
    return MacReport(macs=macs, dense_macs=dense_macs, densities=densities, outputs=outputs)


def ponder_maps(model: nn.Module, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Sum of the last forward's binary gate masks, per macro block and "overall", at `size`.

    Args:
        model: a network with PAGBottlenecks that ran a forward pass.
        size: (H, W) of the input images.

    Returns:
        {"res4": (B, H, W), ..., "overall": (B, H, W)}; values count gated layers that computed.
    """
    maps: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        if not isinstance(m, PAGBottleneck):
            continue
        if m.gate.last_mask is None:
            raise RuntimeError(f"gated block {name} has no mask yet: run a forward pass first")
        macro = next((_LAYER_TO_MACRO[p] for p in name.split(".") if p in _LAYER_TO_MACRO), "other")
        up = F.interpolate(m.gate.last_mask.detach().float(), size=size, mode="nearest")[:, 0]
        maps[macro] = maps[macro] + up if macro in maps else up
    if not maps:
        raise ValueError("model has no gated blocks: no ponder map to draw")
    maps["overall"] = sum(v for k, v in maps.items())
    return maps
