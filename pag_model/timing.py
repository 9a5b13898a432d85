"""Measured wall-clock time of a gated network against its dense model (PAG paper, Figs. 2-3 as time).

PAG's saving is computation skipped at inactive pixels; `pag_model.flops.count_macs` counts it
in multiply-adds, `measure_time_ratio` measures it in seconds on the evaluation device:

    ratio = time(perforated model) / time(dense model), per image, median of `repeats` runs

perforated model: a copy of the network put through `to_perforated` (channels-last, each gated
    3x3 conv computed only at its gate's active pixels, per-layer crossover densities measured
    on this machine by `calibrate_thresholds` so that a denser mask runs the dense conv), gates
    as the network has them (learned, "closed", "fixed", ...);
dense model: a copy with the gates removed (`remove_gates`: plain bottlenecks, 3x3 conv at
    every pixel, no gate computed), the network a user deploys without PAG.

Both copies get the same treatment: eval mode, every BatchNorm folded into its conv
(`fold_batchnorms`), channels-last parameters and input, no autograd. The two are timed in
turn (A B A B ...) so that load on a shared machine hits both alike, with a CUDA synchronise
around each call. MultiPool modules are kept in both copies (the dense copy computes every
branch at every pixel, the perforated copy one branch per pixel), as `benchmarks/inference.py`
compares them. The network passed in is not changed.
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Union

import torch
from torch import nn

from .blocks import remove_gates
from .sparse import Threshold, _attach_sparse, _detach_sparse, calibrate_thresholds, fold_batchnorms, from_perforated, to_perforated

MEASURE = "measure"  # thresholds: calibrate each layer's crossover on this machine


@dataclass(frozen=True)
class TimeRatio:
    """Seconds per image (median over repeats) of the perforated and the dense model."""

    perforated_s: float
    dense_s: float
    repeats: int
    device: str

    @property
    def ratio(self) -> float:
        """perforated_s / dense_s: below 1 when the gates save time."""
        return self.perforated_s / self.dense_s


def interleaved_times(
    runs: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    device: Union[str, torch.device] = "cpu",
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Time each callable `repeats` times, in turn (A B A B ...), after `warmup` untimed rounds.

    Args:
        runs: {name: function to time}.
        repeats: timed calls per function, >= 1.
        warmup: untimed rounds first (first-call costs: weight packing, kernel builds, caches).
        device: where the work runs; on CUDA the device is synchronised before and after each call.
        clock: seconds (time.perf_counter: wall clock; time.thread_time: this thread's CPU).

    Returns:
        {name: [seconds of each timed call]}.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda _device: None
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            sync(device)
            start = clock()
            fn()
            sync(device)
            times[name].append(clock() - start)
    return times


def _deployed(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` in eval mode, BatchNorms folded, channels-last, frozen, on `device`; in place."""
    fold_batchnorms(model)
    model.to(device=device, memory_format=torch.channels_last)
    model.requires_grad_(False)
    return model.eval()


def _copy(net: nn.Module) -> nn.Module:
    """A deep copy of `net` without its perforated modules (their packed weights are a cache)."""
    saved = _detach_sparse(net)
    try:
        return copy.deepcopy(net)
    finally:
        _attach_sparse(saved)


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


@torch.no_grad()
def dense_copy(net: nn.Module) -> nn.Module:
    """The network without gates: plain bottlenecks, BatchNorms folded, channels-last, eval.

    Args:
        net: a PAGNet (or any module with PAGBottlenecks); not changed.
    """
    model = _copy(net)
    remove_gates(model)
    from_perforated(model)  # MultiPool's branches: all of them, dense-masked
    return _deployed(model, _device(net))


@torch.no_grad()
def perforated_copy(
    net: nn.Module,
    images: torch.Tensor,
    thresholds: Union[Threshold, str] = MEASURE,
) -> nn.Module:
    """The network in perforated inference (`to_perforated`), BatchNorms folded, channels-last, eval.

    Args:
        net: a PAGNet (or any module with PAGBottlenecks), gates in any mode; not changed.
        images: (B, 3, H, W) representative input, for measuring the crossovers.
        thresholds: MEASURE (each layer's crossover density measured on `images`' shapes
            with `calibrate_thresholds`), or what `to_perforated` takes (None: always perforated;
            a float; {layer name: density}).
    """
    device = _device(net)
    model = _copy(net).eval()
    if isinstance(thresholds, str):
        if thresholds != MEASURE:
            raise ValueError(f"thresholds must be {MEASURE!r}, None, a float or a dict, got {thresholds!r}")
        thresholds = calibrate_thresholds(model, images.to(device), repeats=2)
    to_perforated(model, thresholds)  # folds each gated conv's BatchNorm into its own snapshot
    return _deployed(model, device)


def measure_time_ratio(
    net: nn.Module,
    images: torch.Tensor,
    repeats: int = 5,
    warmup: int = 1,
    thresholds: Union[Threshold, str] = MEASURE,
    clock: Callable[[], float] = time.perf_counter,
) -> TimeRatio:
    """Wall-clock time per image of `net` in perforated inference over its dense, gate-free model.

    Args:
        net: a trained PAGNet in eval mode, on the evaluation device, gates in any mode; not
            changed (modes, weights, perforated modules).
        images: (B, 3, H, W), H and W divisible by the output stride; moved to net's device
            and dtype, channels-last.
        repeats: timed forwards of each model (interleaved); the median is kept.
        warmup: untimed forwards of each model first.
        thresholds: per-layer dense/perforated crossover, see `perforated_copy`.
        clock: wall clock by default; time.thread_time with torch.set_num_threads(1) measures
            the CPU work alone, which time slices lost to other processes do not inflate.

    Returns:
        TimeRatio with seconds per image of each model and their ratio.
    """
    device = _device(net)
    dtype = next(net.parameters()).dtype
    images = images.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    perforated = perforated_copy(net, images, thresholds)
    dense = dense_copy(net)
    with torch.inference_mode():
        times = interleaved_times(
            {"perforated": lambda: perforated(images), "dense": lambda: dense(images)},
            repeats=repeats,
            warmup=warmup,
            device=device,
            clock=clock,
        )
    batch = images.shape[0]
    return TimeRatio(
        perforated_s=statistics.median(times["perforated"]) / batch,
        dense_s=statistics.median(times["dense"]) / batch,
        repeats=repeats,
        device=str(device),
    )
