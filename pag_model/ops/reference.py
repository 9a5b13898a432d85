"""Perforated convolution in pure PyTorch: the reference backend and the tests' oracle.

Perforated convolution (Figurnov et al., "PerforatedCNNs", NIPS 2016; used by PAG, Kong &
Fowlkes, "Pixel-wise Attentional Gating for Parsimonious Pixel Labeling") evaluates a
convolution only at the active pixels of a mask. This version gathers each active pixel's
k x k neighbourhood from the zero-padded input (one row of length C*k*k per pixel), runs
one GEMM against the flattened weight and scatters the rows into the output. Every step is
an ordinary differentiable PyTorch op, so autograd gives gradients for input, weight, bias
and fill, on any device and dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def active_indices(mask: torch.Tensor) -> torch.Tensor:
    """Flat indices b*H*W + h*W + w of the active pixels, ascending.

    Args:
        mask: (B, H, W) bool.

    Returns:
        (N,) int64 on mask's device.
    """
    return mask.reshape(-1).nonzero().squeeze(1)


def perforated_conv2d_reference(
    input: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    dilation: int = 1,
    fill: Optional[torch.Tensor] = None,
    relu: bool = False,
) -> torch.Tensor:
    """Convolution at the active pixels of `mask`; `fill` (or zeros) elsewhere.

    Arguments are assumed checked by `pag_model.ops.perforated_conv2d`.

    Args:
        input: (B, C, H, W).
        weight: (Co, C, k, k), k odd.
        mask: (B, H, W) bool.
        bias: (Co,) or None.
        dilation: spacing of the kernel taps; padding is dilation * (k // 2).
        fill: (B, Co, H, W) values for inactive pixels, or None for zeros.
        relu: apply ReLU after the bias at active pixels.

    Returns:
        (B, Co, H, W) in input's dtype.
    """
    batch, channels, height, width = input.shape
    out_channels, _, k, _ = weight.shape
    pad = dilation * (k // 2)
    index = active_indices(mask)
    b = index // (height * width)
    h = (index // width) % height
    w = index % width

    # (B, H + 2p, W + 2p, C): one channel vector per padded pixel.
    padded = F.pad(input, (pad, pad, pad, pad)).permute(0, 2, 3, 1)
    taps = torch.arange(k, device=input.device) * dilation
    rows_h = h[:, None, None] + taps[None, :, None]
    rows_w = w[:, None, None] + taps[None, None, :]
    patches = padded[b[:, None, None], rows_h, rows_w]  # (N, k, k, C)
    patches = patches.permute(0, 3, 1, 2).reshape(index.numel(), channels * k * k)

    y = patches @ weight.reshape(out_channels, channels * k * k).t()  # (N, Co)
    if bias is not None:
        y = y + bias
    if relu:
        y = torch.relu(y)

    if fill is None:
        base = input.new_zeros(batch * height * width, out_channels)
    else:
        base = fill.permute(0, 2, 3, 1).reshape(batch * height * width, out_channels)
    out = base.index_copy(0, index, y.to(base.dtype))
    return out.reshape(batch, height, width, out_channels).permute(0, 3, 1, 2)
