"""`perforated_conv2d`: a convolution computed only at the active pixels of a mask.

    out = where(mask[:, None], act(conv2d(input, weight, bias, padding=d*(k//2), dilation=d)),
                fill if fill is not None else 0)

without computing the convolution at inactive pixels (PerforatedCNNs, Figurnov et al. 2016,
as used by PAG's gated bottlenecks and MultiPool). Stride 1, "same" padding, odd square k.

Backends (see `backends.py`): "triton" (fused implicit GEMM, CUDA), "cuda" and "cpp" are
compiled kernels; "reference" is pure PyTorch and the oracle of the tests. The op is
registered with torch.library as `pag::perforated_conv2d` (`library.py`): the public
function checks the arguments and calls it, so it works under torch.compile. The kernels
compute the forward only; the op's backward recomputes the reference graph and
differentiates it, so gradients for input, weight, bias and fill are the reference's on
every backend.

The compiled kernels read a channels-last copy of the input (a no-op for channels-last
inputs) and multiply with the weight in tap-major order (Co, k*k*C), `tap_major(weight)`;
callers with a fixed weight pass that matrix as `weight_rows` to skip the reorder. (No
hidden cache keyed on the weight: in-place edits through `.data` would make it stale.)
The output has the input's memory format on every backend.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from pag_model.ops import backends
from pag_model.ops.checks import check_arguments
from pag_model.ops.reference import active_indices, perforated_conv2d_reference

# Tuning knob for benchmarks and tests: active pixels per tile (cpp) or per chunk (cuda).
TILE_ENV = "PAG_PERFORATED_TILE"


def tap_major(weight: torch.Tensor) -> torch.Tensor:
    """(Co, C, k, k) -> (Co, k*k*C) contiguous, columns ordered (ki, kj, c).

    The compiled kernels multiply channels-last patches with this matrix. Modules that own a
    fixed weight compute it once and pass it as `weight_rows` (a reorder per call costs a
    copy of the weight: 9 MiB for a 512-channel 3x3 layer).

    Args:
        weight: (Co, C, k, k).
    """
    out_channels = weight.shape[0]
    return weight.detach().permute(0, 2, 3, 1).reshape(out_channels, -1).contiguous()


def _memory_format(input: torch.Tensor) -> torch.memory_format:
    if not input.is_contiguous() and input.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def run_compiled(
    backend: str,
    input: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: Optional[torch.Tensor],
    dilation: int,
    fill: Optional[torch.Tensor],
    relu: bool,
    weight_rows: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Forward of a compiled backend ("cpp", "cuda" or "triton"); no autograd. Shapes as the public op."""
    batch, _, height, width = input.shape
    out_channels, _, k, _ = weight.shape
    fmt = _memory_format(input)
    if fill is None:
        out = torch.empty(
            (batch, out_channels, height, width),
            dtype=input.dtype,
            device=input.device,
            memory_format=fmt,
        ).zero_()
    else:
        out = torch.empty_like(fill, memory_format=fmt).copy_(fill)
    index = active_indices(mask)
    if index.numel() == 0:
        return out
    x = input.contiguous(memory_format=torch.channels_last)
    b = bias.contiguous() if bias is not None else None
    rows = weight_rows if weight_rows is not None else tap_major(weight)
    if backend == "triton":
        backends.triton_kernels().perforated_conv2d_triton_(out, x, rows, index, b, k, dilation, relu)
        return out
    extension = backends.CPP if backend == "cpp" else backends.CUDA
    tile = int(os.environ.get(TILE_ENV, "0"))  # pixels per tile (CPU) / per chunk (CUDA); 0 = auto
    extension.load().perforated_conv2d_(out, x, rows, index, b, k, dilation, relu, tile)
    return out


def forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: Optional[torch.Tensor],
    dilation: int,
    fill: Optional[torch.Tensor],
    relu: bool,
    weight_rows: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The op's forward on the chosen backend, no autograd; (B, Co, H, W) in input's memory format.

    The registered op's CPU and CUDA kernels (`library.py`) call this with checked arguments.
    """
    backend = backends.choose_backend(input)
    if backend != "reference":
        return run_compiled(backend, input, weight, mask, bias, dilation, fill, relu, weight_rows)
    out = perforated_conv2d_reference(input, weight, mask, bias, dilation, fill, relu)
    return out.contiguous(memory_format=_memory_format(input))


def perforated_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    dilation: int = 1,
    fill: Optional[torch.Tensor] = None,
    relu: bool = False,
    weight_rows: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Convolution (+ bias, + ReLU) at pixels where mask is true; `fill` or zeros elsewhere.

    Args:
        input: (B, C, H, W), floating point.
        weight: (Co, C, k, k), k odd; stride 1, padding dilation * (k // 2).
        mask: (B, H, W) bool, on input's device.
        bias: (Co,) or None.
        dilation: kernel dilation, int >= 1.
        fill: (B, Co, H, W) values at inactive pixels, or None for zeros.
        relu: apply ReLU after the bias at active pixels (fill is left as given).
        weight_rows: optional `tap_major(weight)`, precomputed by callers with a fixed weight;
            it must hold the same values as `weight` (only its shape is checked).

    Returns:
        (B, Co, H, W), input's dtype, device and memory format.

    Raises:
        ValueError / TypeError: on bad shapes, dtypes or devices (the message names them).
        RuntimeError: PAG_PERFORATED_BACKEND forces a backend that cannot run here.
    """
    check_arguments(input, weight, mask, bias, dilation, fill)
    if weight_rows is not None:
        expected = (weight.shape[0], weight[0].numel())
        if (tuple(weight_rows.shape), weight_rows.dtype, weight_rows.device) != (
            expected, weight.dtype, weight.device
        ):
            raise ValueError(
                f"perforated_conv2d: weight_rows must be tap_major(weight), {expected} "
                f"{weight.dtype} on {weight.device}, got {tuple(weight_rows.shape)} "
                f"{weight_rows.dtype} on {weight_rows.device}"
            )
        weight_rows = weight_rows.contiguous()
    # pag::perforated_conv2d is defined by pag_model/ops/library.py, which the package's
    # __init__ imports before anyone can reach this function.
    return torch.ops.pag.perforated_conv2d(input, weight, mask, bias, dilation, fill, relu, weight_rows)
