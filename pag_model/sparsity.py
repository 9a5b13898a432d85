"""Per-layer KL sparsity loss (PAG paper, Eqs. 5-6).

For each gated layer l, g_l is the mean of its binary mask over the image; the loss is
lambda * sum_l KL(rho || g_l) with KL(rho||g) = rho log(rho/g) + (1-rho) log((1-rho)/(1-g)).
The paper penalises each layer separately: a single KL on the average density lets the network
switch whole layers off instead of learning pixel-wise paths.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn

from .gating import GumbelGate

# Without a pixel count, g is mapped affinely into [EPS, 1 - EPS] (not clamped) so the loss
# stays finite at g in {0, 1} and its gradient does not vanish there.
EPS = 1e-6


def check_rho(rho: float) -> float:
    """Return rho if it lies in (0, 1], else raise naming the value."""
    if not 0.0 < float(rho) <= 1.0:
        raise ValueError(f"rho (target density) must be in (0, 1], got {rho}")
    return float(rho)


def kl_divergence(rho: float, g: torch.Tensor, pixels: Optional[int] = None) -> torch.Tensor:
    """KL(rho || g) elementwise for densities g in [0, 1] (Eq. 5), finite at g = 0 and 1.

    `pixels`: the number of mask pixels g is the mean of. Given, g is read as the density of
    the mask with half a pixel added on each side, g' = (g * pixels + 1/2) / (pixels + 1)
    (additive smoothing of a count), which bounds the gradient reaching each pixel's gate by
    about 2 * max(rho, 1 - rho) even when every pixel of an image is open (or closed). The
    hard masks of a small image often are: with a fixed epsilon instead, that gradient is
    rho / (EPS * pixels) (~8000 for an 8 x 8 gate map) and kicks the gate logits far past
    their target, or to NaN. Otherwise g is mapped into [EPS, 1 - EPS].
    """
    rho = check_rho(rho)
    if pixels is not None:
        if pixels < 1:
            raise ValueError(f"pixels (mask size) must be >= 1, got {pixels}")
        g = (g * pixels + 0.5) / (pixels + 1)
    else:
        g = g * (1.0 - 2.0 * EPS) + EPS
    kl = -rho * torch.log(g) - (1.0 - rho) * torch.log1p(-g)
    # The constant rho log rho + (1-rho) log(1-rho) makes KL(rho||rho) = 0.
    if rho < 1.0:
        kl = kl + rho * torch.log(torch.tensor(rho)) + (1.0 - rho) * torch.log(torch.tensor(1.0 - rho))
    return kl


def learned_gates(model: nn.Module) -> list[tuple[str, GumbelGate]]:
    """(name, gate) for every gate of `model` in "learned" mode, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, GumbelGate) and m.mode == "learned"]


def layer_densities(gates: Iterable[tuple[str, GumbelGate]]) -> dict[str, torch.Tensor]:
    """Per-image density g_l, shape (B,), of each gate's last mask."""
    out = {}
    for name, gate in gates:
        if gate.last_mask is None:
            raise RuntimeError(f"gate {name} has no mask yet: run a forward pass first")
        out[name] = gate.last_mask.flatten(1).mean(dim=1)
    return out


def sparsity_loss(model: nn.Module, rho: float, lam: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """lambda * sum over learned gates of KL(rho || g_l), g_l per image, averaged over the batch
    (per batch for per-image gates: `_layer_kl`).

    Args:
        model: a network whose gates ran a forward pass.
        rho: target density in (0, 1].
        lam: weight lambda (>= 0).

    Returns:
        (loss scalar, {gate name: (B,) densities, detached}).
    """
    check_rho(rho)
    if lam < 0:
        raise ValueError(f"lambda (sparsity weight) must be >= 0, got {lam}")
    gates = learned_gates(model)
    densities = layer_densities(gates)
    if not densities:
        zero = next(model.parameters()).new_zeros(())
        return zero, {}
    total = sum(_layer_kl(rho, gate, densities[name]) for name, gate in gates)
    return lam * total, {k: v.detach() for k, v in densities.items()}


def _layer_kl(rho: float, gate: GumbelGate, g: torch.Tensor) -> torch.Tensor:
    """KL(rho || g_l) of one layer from its per-image densities g (B,).

    A per-image gate ("image" granularity, layer skipping) has densities 0 or 1: its g_l is
    the batch's share of images that compute the layer (the target rate of adaptive inference
    graphs), smoothed over the B decisions. Pixel and static gates: per image, over its pixels.
    """
    if getattr(gate, "granularity", "pixel") == "image":
        return kl_divergence(rho, g.mean(), g.shape[0])
    return kl_divergence(rho, g, gate.last_mask[0].numel()).mean()
