"""Argument checks for `perforated_conv2d`: every message names the argument, its shape and what was expected."""
from __future__ import annotations

from typing import Optional

import torch


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_arguments(
    input: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: Optional[torch.Tensor],
    dilation: int,
    fill: Optional[torch.Tensor],
) -> None:
    """Raise ValueError / TypeError when the arguments do not describe a perforated convolution.

    Args:
        input: expected (B, C, H, W), floating point.
        weight: expected (Co, C, k, k), k odd, same dtype and device as input.
        mask: expected (B, H, W) bool on input's device.
        bias: expected None or (Co,), same dtype and device as input.
        dilation: expected int >= 1.
        fill: expected None or (B, Co, H, W), same dtype and device as input.
    """
    if not isinstance(input, torch.Tensor) or input.dim() != 4:
        got = _shape(input) if isinstance(input, torch.Tensor) else type(input).__name__
        raise ValueError(f"perforated_conv2d: input must be (B, C, H, W), got {got}")
    if not input.is_floating_point():
        raise TypeError(f"perforated_conv2d: input must be floating point, got {input.dtype}")
    batch, channels, height, width = input.shape

    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        got = _shape(weight) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"perforated_conv2d: weight must be (Co, C, k, k), got {got}")
    out_channels, in_channels, kh, kw = weight.shape
    if in_channels != channels:
        raise ValueError(
            f"perforated_conv2d: weight {_shape(weight)} expects {in_channels} input channels, "
            f"input {_shape(input)} has {channels}"
        )
    if kh != kw or kh % 2 == 0:
        raise ValueError(
            f"perforated_conv2d: weight {_shape(weight)} must have a square, odd kernel (k, k)"
        )
    _same_kind("weight", weight, input)

    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"perforated_conv2d: mask must be a bool tensor, got {got}")
    if tuple(mask.shape) != (batch, height, width):
        raise ValueError(
            f"perforated_conv2d: mask {_shape(mask)} must be (B, H, W) = "
            f"({batch}, {height}, {width}) to match input {_shape(input)}"
        )
    if mask.device != input.device:
        raise ValueError(f"perforated_conv2d: mask is on {mask.device}, input on {input.device}")

    if bias is not None:
        if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (out_channels,):
            got = _shape(bias) if isinstance(bias, torch.Tensor) else type(bias).__name__
            raise ValueError(f"perforated_conv2d: bias must be (Co,) = ({out_channels},), got {got}")
        _same_kind("bias", bias, input)

    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"perforated_conv2d: dilation must be an int >= 1, got {dilation!r}")

    if fill is not None:
        expected = (batch, out_channels, height, width)
        if not isinstance(fill, torch.Tensor) or tuple(fill.shape) != expected:
            got = _shape(fill) if isinstance(fill, torch.Tensor) else type(fill).__name__
            raise ValueError(f"perforated_conv2d: fill must be (B, Co, H, W) = {expected}, got {got}")
        _same_kind("fill", fill, input)


def _same_kind(name: str, t: torch.Tensor, input: torch.Tensor) -> None:
    if t.dtype != input.dtype:
        raise TypeError(f"perforated_conv2d: {name} is {t.dtype}, input is {input.dtype}; they must match")
    if t.device != input.device:
        raise ValueError(f"perforated_conv2d: {name} is on {t.device}, input on {input.device}")
