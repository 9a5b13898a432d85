"""Oracle and input helpers shared by the perforated-convolution tests.

`dense_then_mask` is the op's definition computed densely by PyTorch's own convolution:
    where(mask[:, None], act(F.conv2d(x, w, b, padding=d*(k//2), dilation=d)), fill or 0)
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def dense_then_mask(
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: Optional[torch.Tensor],
    dilation: int,
    fill: Optional[torch.Tensor],
    relu: bool,
) -> torch.Tensor:
    """F.conv2d everywhere, then keep the active pixels; (B, Co, H, W)."""
    pad = dilation * (weight.shape[-1] // 2)
    y = F.conv2d(x, weight, bias, padding=pad, dilation=dilation)
    if relu:
        y = torch.relu(y)
    other = fill if fill is not None else torch.zeros_like(y)
    return torch.where(mask[:, None], y, other)


def make_mask(batch: int, height: int, width: int, density: float, device: str = "cpu") -> torch.Tensor:
    """(B, H, W) bool with exactly round(density * pixels) active pixels (>= 1 if density > 0)."""
    total = batch * height * width
    count = 0 if density == 0 else max(1, round(density * total))
    flat = torch.zeros(total, dtype=torch.bool)
    flat[torch.randperm(total)[:count]] = True
    return flat.reshape(batch, height, width).to(device)


def layout(x: torch.Tensor, kind: str) -> torch.Tensor:
    """x as "contiguous", "channels_last" or "strided" (every other column of a wider tensor)."""
    if kind == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if kind == "strided":
        wide = torch.randn(*x.shape[:3], 2 * x.shape[3], dtype=x.dtype, device=x.device)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x.contiguous()
