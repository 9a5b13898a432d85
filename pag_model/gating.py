"""Pixel-wise attentional gates: Gumbel straight-through sampling (PAG paper, Eqs. 3-4).

A gate is a 1x1 convolution on a block's input I that gives, per pixel, the logits
log(alpha) of a K-way choice (K = 2 for on/off gates, K = P for MultiPool's branch
selector). Training draws a hard one-hot sample argmax(log alpha + m) with Gumbel noise m
(Eq. 3) in the forward pass and back-propagates the gradient of the relaxation
softmax((log alpha + m) / tau) (Eq. 4): the straight-through estimator. Evaluation takes
the argmax of the logits, with no noise.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

GATE_MODES = ("learned", "open", "closed", "fixed")
# What one learned decision covers: a pixel (PAG), a whole image (layer skipping, as in
# Veit & Belongie's adaptive inference graphs, the paper's [51]), or a position whatever the
# input (a learned input-independent mask, as in PerforatedCNN, the paper's Table 2).
GRANULARITIES = ("pixel", "image", "static")


class _StraightThrough(torch.autograd.Function):
    """Forward returns `hard` bit for bit; backward hands the gradient to `soft`."""

    @staticmethod
    def forward(ctx, soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        return hard.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def gumbel_straight_through(
    logits: torch.Tensor,
    tau: float,
    dim: int = 1,
    noise: bool = True,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Hard one-hot sample forward, softmax((logits + m) / tau) gradient backward.

    Args:
        logits: log(alpha), e.g. (B, K, H, W).
        tau: temperature of the relaxation, > 0.
        dim: the choice dimension.
        noise: add Gumbel noise m = -log(-log u) (Eq. 3); False gives the argmax.
        generator: optional RNG for the noise.

    Returns:
        A tensor shaped like `logits` whose values are exactly 0 or 1, one 1 along `dim`.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if noise:
        u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
        # Keep u inside (0, 1) so the double log stays finite.
        tiny = torch.finfo(logits.dtype).tiny
        m = -torch.log(-torch.log(u.clamp(tiny, 1.0 - 1e-7)))
        perturbed = logits + m
    else:
        perturbed = logits
    soft = F.softmax(perturbed / tau, dim=dim)
    index = perturbed.argmax(dim=dim, keepdim=True)
    hard = torch.zeros_like(soft).scatter_(dim, index, 1.0)
    return _StraightThrough.apply(soft, hard)


class GumbelGate(nn.Module):
    """Binary gate mask G = G(I) over a block's pixels, learned with Gumbel straight-through.

    Granularity (what one decision covers; the mask is always (B, 1, H, W)):
    - "pixel": logits from a 1x1 convolution on the block input, per pixel (PAG);
    - "image": logits from the same 1x1 convolution on the globally averaged input, one
      decision per image and layer (layer skipping);
    - "static": logits are a learned (2, S, S) parameter, resized (nearest) to (H, W): one
      decision per position, the same for every input (a learned perforation mask).

    Modes: "learned" (Gumbel straight-through in training, argmax in eval), "open" (all ones),
    "closed" (all zeros), "fixed" (a user-given mask, e.g. for baselines and benchmarks).
    After each forward, `last_mask` holds the (B, 1, H, W) mask, with its gradient path in
    learned training mode, so the sparsity loss can read the layer's density.
    """

    def __init__(
        self,
        in_channels: int,
        init_open_prob: float = 0.95,
        mode: str = "learned",
        granularity: str = "pixel",
        static_size: int = 8,
    ) -> None:
        """
        Args:
            in_channels: channels of the block input I.
            init_open_prob: initial probability of "compute" at every pixel (the bias), so that
                a converted pretrained network starts close to the original.
            mode: one of GATE_MODES.
            granularity: one of GRANULARITIES.
            static_size: S, the side of a "static" gate's logit grid.
        """
        super().__init__()
        if not 0.0 < init_open_prob < 1.0:
            raise ValueError(f"init_open_prob must be in (0, 1), got {init_open_prob}")
        if granularity not in GRANULARITIES:
            raise ValueError(f"unknown gate granularity {granularity!r}; allowed: {', '.join(GRANULARITIES)}")
        self.granularity = granularity
        bias = torch.tensor([0.0, math.log(init_open_prob / (1 - init_open_prob))])
        # Two logits per decision: index 0 = skip, index 1 = compute.
        if granularity == "static":
            self.static_logits = nn.Parameter(bias[:, None, None].repeat(1, static_size, static_size))
        else:
            self.conv = nn.Conv2d(in_channels, 2, kernel_size=1, bias=True)
            nn.init.normal_(self.conv.weight, std=1e-3)
            with torch.no_grad():
                self.conv.bias.copy_(bias)
        self.tau = 1.0
        self.mode = "learned"
        self.set_mode(mode)
        self.fixed_mask: Optional[torch.Tensor] = None
        self.last_mask: Optional[torch.Tensor] = None

    def set_mode(self, mode: str, fixed_mask: Optional[torch.Tensor] = None) -> None:
        """Switch mode; "fixed" takes a mask (B, H, W) or (H, W) of 0/1 values."""
        if mode not in GATE_MODES:
            raise ValueError(f"unknown gate mode {mode!r}; allowed: {', '.join(GATE_MODES)}")
        if mode == "fixed":
            if fixed_mask is None:
                raise ValueError("gate mode 'fixed' needs fixed_mask, a (B, H, W) or (H, W) 0/1 tensor")
            self.fixed_mask = fixed_mask
        self.mode = mode

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> logits log(alpha): (B, 2, H, W) per pixel, (B, 2, 1, 1) per image,
        (1, 2, H, W) static."""
        if self.granularity == "pixel":
            return self.conv(x)
        if self.granularity == "image":
            return self.conv(x.mean(dim=(2, 3), keepdim=True))
        return F.interpolate(self.static_logits[None].to(x.dtype), size=x.shape[-2:], mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) block input -> (B, 1, H, W) mask with values in {0, 1}."""
        b, _, h, w = x.shape
        if self.mode == "learned":
            choice = gumbel_straight_through(self.logits(x), self.tau, dim=1, noise=self.training)
            mask = choice[:, 1:2].expand(b, 1, h, w)
        elif self.mode == "open":
            mask = x.new_ones(b, 1, h, w)
        elif self.mode == "closed":
            mask = x.new_zeros(b, 1, h, w)
        else:
            mask = self._fixed(b, h, w, x)
        self.last_mask = mask
        return mask

    def _fixed(self, b: int, h: int, w: int, x: torch.Tensor) -> torch.Tensor:
        fixed = self.fixed_mask
        if fixed.dim() == 2:
            fixed = fixed[None]
        if fixed.shape[-2:] != (h, w) or fixed.shape[0] not in (1, b):
            raise ValueError(
                f"fixed gate mask has shape {tuple(self.fixed_mask.shape)}; this layer needs "
                f"({b}, {h}, {w}) or ({h}, {w})"
            )
        return fixed.to(device=x.device, dtype=x.dtype).expand(b, h, w)[:, None]

    def extra_repr(self) -> str:
        return f"granularity={self.granularity}, mode={self.mode}, tau={self.tau}"
