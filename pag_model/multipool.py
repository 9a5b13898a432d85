"""MultiPool: a pooling size chosen per pixel (PAG paper, Sec. 3.4, Fig. 3).

P branches of 3x3 convolutions at different dilation rates (default [0, 1, 2, 4, 6, 8, 10],
where 0 copies the input) give pooled maps M_i; spatial selection masks W_i combine them,
O = sum_i W_i * M_i. The PAG variant draws W as a one-hot Gumbel straight-through sample per
pixel (exactly one branch per pixel, no sparsity loss); the paper's "w-Avg" baseline uses the
softmax weights instead, computing every branch.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .gating import gumbel_straight_through

DEFAULT_DILATIONS = (0, 1, 2, 4, 6, 8, 10)
MULTIPOOL_VARIANTS = ("pag", "wavg")


def pooling_branch(
    channels: int,
    dilation: int,
    norm_layer: type[nn.Module] = nn.BatchNorm2d,
) -> nn.Module:
    """Copy for dilation 0, else 3x3 conv (dilation d, padding d) -> norm -> ReLU."""
    if dilation == 0:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
        norm_layer(channels),
        nn.ReLU(inplace=True),
    )


class MultiPool(nn.Module):
    """Per-pixel choice among dilated 3x3 pooling branches. (B, C, H, W) -> (B, C, H, W).

    After a forward, `last_selection` holds W (B, P, H, W): one-hot for "pag", softmax weights
    for "wavg". `forced_branch` (an index) makes every pixel take that branch. When
    `sparse_branches` is set (see `pag_model.sparse.to_perforated`) and in eval mode with the
    PAG variant, it computes each branch only at the pixels that chose it, from x and the
    (B, H, W) int64 branch index.
    """

    def __init__(
        self,
        channels: int,
        dilations: Sequence[int] = DEFAULT_DILATIONS,
        variant: str = "pag",
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        """
        Args:
            channels: input and output channels C.
            dilations: one branch per rate; 0 copies the input. Non-empty, non-negative, distinct.
            variant: "pag" (one branch per pixel) or "wavg" (softmax-weighted average).
            norm_layer: normalisation class of the branches.
        """
        super().__init__()
        dilations = [int(d) for d in dilations]
        if not dilations:
            raise ValueError("MultiPool dilations must be a non-empty list, e.g. [0, 1, 2, 4, 6, 8, 10]")
        if any(d < 0 for d in dilations) or len(set(dilations)) != len(dilations):
            raise ValueError(f"MultiPool dilations must be distinct and >= 0, got {dilations}")
        if variant not in MULTIPOOL_VARIANTS:
            raise ValueError(f"unknown MultiPool variant {variant!r}; allowed: {', '.join(MULTIPOOL_VARIANTS)}")
        self.dilations = dilations
        self.variant = variant
        self.branches = nn.ModuleList(pooling_branch(channels, d, norm_layer) for d in dilations)
        self.selector = nn.Conv2d(channels, len(dilations), kernel_size=1, bias=True)
        nn.init.normal_(self.selector.weight, std=1e-3)
        nn.init.zeros_(self.selector.bias)
        self.tau = 1.0
        self.forced_branch: Optional[int] = None
        self.sparse_branches: Optional[nn.Module] = None
        self.last_selection: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        weights = self.selection(x)
        self.last_selection = weights
        if self.sparse_branches is not None and not self.training and self.variant == "pag":
            return self.sparse_branches(x, weights.argmax(dim=1))
        out = x.new_zeros(x.shape)
        for i, branch in enumerate(self.branches):
            out = out + weights[:, i : i + 1] * branch(x)
        return out

    def selection(self, x: torch.Tensor) -> torch.Tensor:
        """W (B, P, H, W): one-hot (pag, forced) or softmax weights (wavg)."""
        if self.forced_branch is not None:
            index = torch.full_like(x[:, :1], self.forced_branch, dtype=torch.long)
            return torch.zeros(x.shape[0], len(self.branches), *x.shape[2:], device=x.device, dtype=x.dtype).scatter_(
                1, index, 1.0
            )
        logits = self.selector(x)
        if self.variant == "wavg":
            return F.softmax(logits, dim=1)
        return gumbel_straight_through(logits, self.tau, dim=1, noise=self.training)

    def force_branch(self, index: Optional[int]) -> None:
        """Make every pixel take branch `index` (None restores the learned choice)."""
        if index is not None and not 0 <= index < len(self.branches):
            raise ValueError(f"branch index {index} out of range for {len(self.branches)} branches")
        self.forced_branch = index

    def extra_repr(self) -> str:
        return f"dilations={self.dilations}, variant={self.variant}"
