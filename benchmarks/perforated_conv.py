"""Perforated vs dense 3x3 convolution on the layers of a dilated ResNet-50 (output stride 8).

For a 512x512 image the Res4 and Res5 3x3 convolutions see 64x64 maps:
    res4: 256 -> 256 channels, dilation 2        res5: 512 -> 512 channels, dilation 4
For each layer, batch and mask density the script times F.conv2d (dense, same dtype and
threads) and `perforated_conv2d` on a random mask of that density (independent pixels: the
worst case for locality; learned masks are blobbier), alternating the two so that machine
noise hits both, keeping each one's minimum, and prints time(perforated) / time(dense) beside the ideal ratio (= density)
and the target (<= 1.15 x density for 0.25..0.75, <= 1.1 at 1.0).

    .venv/bin/python benchmarks/perforated_conv.py                 # best backend (cpp on CPU)
    PAG_PERFORATED_BACKEND=reference .venv/bin/python benchmarks/perforated_conv.py --batches 1
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# The repository root, so the script runs from a checkout whatever the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pag_model.ops import choose_backend, perforated_conv2d, tap_major  # noqa: E402

LAYERS = {"res4": (256, 2), "res5": (512, 4)}


def target(density: float) -> float | None:
    if density >= 1.0:
        return 1.1
    if 0.25 <= density <= 0.75:
        return 1.15 * density
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_pair(dense, perforated, repeats: int, device: torch.device, clock=time.perf_counter) -> tuple[float, float]:
    """Minimum seconds of each callable, interleaved, after one warm-up call of each.

    The minimum, not the median: on a shared machine other processes only ever add time.
    """
    dense(), perforated()
    sync(device)
    t_dense, t_perf = [], []
    for _ in range(repeats):
        start = clock()
        dense()
        sync(device)
        t_dense.append(clock() - start)
        start = clock()
        perforated()
        sync(device)
        t_perf.append(clock() - start)
    return min(t_dense), min(t_perf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument(
        "--densities", nargs="+", type=float, default=[0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    )
    parser.add_argument("--size", type=int, default=64, help="feature map side (64 = 512 / 8)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--channels-last", action="store_true", help="channels-last input for both forms")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--clock", default="wall", choices=["wall", "thread"],
        help="wall: perf_counter; thread: this thread's CPU time (needs --threads 1; immune to "
             "time slices lost to other processes on a shared machine)",
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "thread" and (torch.get_num_threads() != 1 or args.device != "cpu"):
        parser.error("--clock thread measures one CPU thread: use it with --threads 1 on the CPU")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    probe = torch.empty(0, dtype=dtype, device=device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device={device} dtype={dtype} threads={torch.get_num_threads()} backend={choose_backend(probe)} "
          f"channels_last={args.channels_last} clock={args.clock} torch={torch.__version__} repeats={args.repeats} "
          f"(minimum kept) load average={load:.1f}")
    print(f"{'layer':6} {'B':>2} {'density':>7} {'dense ms':>9} {'perf ms':>9} "
          f"{'ratio':>6} {'ideal':>6} {'target':>7}  ok")
    misses = 0
    for layer in args.layers:
        channels, dilation = LAYERS[layer]
        weight = (torch.randn(channels, channels, 3, 3, generator=gen) * 0.02).to(device, dtype)
        rows = tap_major(weight)  # reordered once, as the inference modules (pag_model.sparse) do
        for batch in args.batches:
            x = torch.randn(batch, channels, args.size, args.size, generator=gen).to(device, dtype)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for density in args.densities:
                mask = (torch.rand(batch, args.size, args.size, generator=gen) < density).to(device)
                if density >= 1.0:
                    mask[:] = True
                real = mask.float().mean().item()
                with torch.inference_mode():
                    t_dense, t_perf = time_pair(
                        lambda: F.conv2d(x, weight, padding=dilation, dilation=dilation),
                        lambda: perforated_conv2d(x, weight, mask, dilation=dilation, weight_rows=rows),
                        args.repeats,
                        device,
                        clock,
                    )
                ratio = t_perf / t_dense
                goal = target(density)
                ok = "" if goal is None else ("yes" if ratio <= goal else "NO")
                misses += ok == "NO"
                goal_s = "" if goal is None else f"{goal:.3f}"
                print(f"{layer:6} {batch:>2} {real:7.3f} {t_dense * 1e3:9.2f} {t_perf * 1e3:9.2f} "
                      f"{ratio:6.3f} {real:6.3f} {goal_s:>7}  {ok}", flush=True)
    print(f"targets missed: {misses}")


if __name__ == "__main__":
    main()
