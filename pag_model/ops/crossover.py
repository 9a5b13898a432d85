"""Measured crossover density: above it a dense conv beats the perforated one for a layer.

A perforated conv costs about density x dense plus a gather/scatter overhead, so on some
layer shapes and machines the dense path (conv everywhere, then `where`) wins near density 1.
`measure_crossover` times both forms of one layer (conv + bias + ReLU, inactive pixels taken
from `fill`) on random channels-last inputs at a few densities, each as inference runs it
(on the CPU the packed kernel writing into the input in place, `pag_model.ops.cpu`), and
returns the density at which their times cross, or None when the perforated form is faster
at every density measured.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from pag_model.ops.cpu import PackedConv, usable
from pag_model.ops.perforated import perforated_conv2d, tap_major

DEFAULT_DENSITIES = (0.5, 0.7, 0.85, 1.0)


def _best_time(fn: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> float:
    """Minimum wall time of `repeats` calls after one warm-up call (noise only adds time)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def crossing(densities: Sequence[float], perforated: Sequence[float], dense: Sequence[float]) -> Optional[float]:
    """Density where perforated time first reaches dense time (linear between grid points).

    Args:
        densities: ascending densities of the measurements.
        perforated: perforated times at those densities.
        dense: dense times at those densities.

    Returns:
        None if perforated is faster everywhere; the first density if it is slower everywhere.
    """
    gaps = [p - d for p, d in zip(perforated, dense)]
    for i, gap in enumerate(gaps):
        if gap >= 0:
            if i == 0:
                return float(densities[0])
            d0, d1, g0 = densities[i - 1], densities[i], gaps[i - 1]
            return float(d0 + (d1 - d0) * (-g0) / (gap - g0))
    return None


@torch.inference_mode()
def measure_crossover(
    shape: Sequence[int],
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    dilation: int,
    densities: Sequence[float] = DEFAULT_DENSITIES,
    repeats: int = 3,
    seed: int = 0,
) -> tuple[Optional[float], list[tuple[float, float, float]]]:
    """Time dense vs perforated conv+bias+ReLU for one layer; return (crossover, measurements).

    Args:
        shape: the layer input's (B, C, H, W).
        weight: (Co, C, k, k) on the device and in the dtype to measure.
        bias: (Co,) or None.
        dilation: the layer's dilation.
        densities: ascending mask densities to time.
        repeats: timed calls per form and density (the minimum is kept).
        seed: for the random input and masks.

    Returns:
        crossover density (None: perforated always faster), and (density, perforated s, dense s)
        per density.
    """
    gen = torch.Generator().manual_seed(seed)
    batch, channels, height, width = shape
    out_channels, _, k, _ = weight.shape
    device = weight.device
    x = torch.randn(batch, channels, height, width, generator=gen).to(device, weight.dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    fill = x if out_channels == channels else torch.zeros(
        batch, out_channels, height, width, device=device, dtype=weight.dtype
    ).contiguous(memory_format=torch.channels_last)
    rows = tap_major(weight)
    packed = PackedConv(weight, bias, dilation) if usable(x) else None
    pad = dilation * (k // 2)
    results = []
    for density in densities:
        mask = (torch.rand(batch, height, width, generator=gen) < density).to(device)

        def dense() -> torch.Tensor:
            y = torch.relu(F.conv2d(x, weight, bias, padding=pad, dilation=dilation))
            return torch.where(mask[:, None], y, fill)

        def perforated() -> torch.Tensor:
            if packed is not None:  # in place into fill (x's values drift between calls; times do not)
                return packed.run_into_(fill, x, mask, relu=True)
            return perforated_conv2d(x, weight, mask, bias=bias, dilation=dilation, fill=fill, relu=True, weight_rows=rows)

        results.append((float(density), _best_time(perforated, repeats, device), _best_time(dense, repeats, device)))
    cross = crossing([r[0] for r in results], [r[1] for r in results], [r[2] for r in results])
    return cross, results
