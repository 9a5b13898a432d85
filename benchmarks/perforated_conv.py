"""Perforated vs dense 3x3 convolution on the layers of a dilated ResNet-50 (output stride 8).

For a 512x512 image the Res4 and Res5 3x3 convolutions see 64x64 maps:
    res4: 256 -> 256 channels, dilation 2        res5: 512 -> 512 channels, dilation 4
Each layer is timed as a model runs it (conv + folded-BN bias + ReLU, channels-last):
    dense       relu(conv2d(x, w, b)) everywhere (oneDNN), same dtype and threads;
    perforated  on the CPU, `PackedConv.run_into_(x, x, mask)` (pag_model.ops.cpu): the
                weight packed once, results written into x in place at the active pixels
                (the PAG block's Gbar*X + G*Y); elsewhere `perforated_conv2d(..., fill=x)`.
on a random mask of each density (independent pixels: the worst case for locality; learned
masks are blobbier), alternating the two so that machine noise hits both, keeping each
one's minimum; it prints time(perforated) / time(dense) beside the ideal ratio (= density)
and the target (fp32 <= 1.25 x density, bf16/fp16 <= 1.15 x density, for 0.25..0.75;
above a layer's crossover density the model runs it dense, see pag_model.sparse).

First it prints the machine's ceiling: the CPU model and, per layer and batch, the same
GEMM (M = B*H*W pixels, K = 9*C, N = Co) through torch.mm and through oneDNN's matmul with
a packed weight, as a ratio to the dense conv, fp32 and bf16. A perforated layer cannot
beat density x that ratio by much.

    .venv/bin/python benchmarks/perforated_conv.py --threads 2                  # wall clock
    .venv/bin/python benchmarks/perforated_conv.py --threads 1 --clock thread   # CPU time
    .venv/bin/python benchmarks/perforated_conv.py --dtype bfloat16 --threads 2
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F


from pag_model.ops import choose_backend, perforated_conv2d, tap_major
from pag_model.ops.cpu import PackedConv, usable

LAYERS = {"res4": (256, 2), "res5": (512, 4)}


def target(density: float, dtype: torch.dtype) -> float | None:
    if 0.25 <= density <= 0.75:
        return (1.25 if dtype in (torch.float32, torch.float64) else 1.15) * density
    return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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


@torch.inference_mode()
def ceiling(channels: int, dilation: int, batch: int, size: int, repeats: int, clock) -> str:
    """'fp32 mm/conv, onednn/conv; bf16 ...': the GEMM of the whole layer against the dense conv."""
    parts = []
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(batch, channels, size, size).to(dtype).contiguous(memory_format=torch.channels_last)
        w = (torch.randn(channels, channels, 3, 3) * 0.02).to(dtype)
        rows = tap_major(w)
        a = torch.randn(batch * size * size, rows.shape[1]).to(dtype)
        out = torch.empty(a.shape[0], channels, dtype=dtype)
        t_conv, t_mm = time_pair(
            lambda: F.conv2d(x, w, padding=dilation, dilation=dilation),
            lambda: torch.mm(a, rows.t(), out=out), repeats, torch.device("cpu"), clock)
        packed = torch.ops.mkldnn._reorder_linear_weight(rows, 256)
        tile = 256

        def onednn() -> None:
            for s in range(0, a.shape[0], tile):
                torch.ops.mkldnn._linear_pointwise(a[s:s + tile], packed, None, "none", [], "")

        t_conv2, t_dnn = time_pair(lambda: F.conv2d(x, w, padding=dilation, dilation=dilation), onednn,
                                   repeats, torch.device("cpu"), clock)
        name = "fp32" if dtype == torch.float32 else "bf16"
        parts.append(f"{name}: conv {t_conv * 1e3:.1f} ms, mm/conv {t_mm / t_conv:.3f}, "
                     f"onednn-packed(256-row tiles)/conv {t_dnn / t_conv2:.3f}")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument(
        "--densities", nargs="+", type=float, default=[0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    )
    parser.add_argument("--size", type=int, default=64, help="feature map side (64 = 512 / 8)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--nchw", action="store_true", help="contiguous (NCHW) inputs instead of channels-last")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the GEMM-ceiling measurement")
    parser.add_argument(
        "--clock", default="wall", choices=["wall", "thread", "process"],
        help="wall: perf_counter; thread: this thread's CPU time (needs --threads 1; immune to "
             "time slices lost to other processes on a shared machine); process: CPU time of all "
             "threads (OpenMP's spin-waits included: ~threads x wall on an idle machine)",
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "thread" and (torch.get_num_threads() != 1 or args.device != "cpu"):
        parser.error("--clock thread measures one CPU thread: use it with --threads 1 on the CPU")
    clock = {"wall": time.perf_counter, "thread": time.thread_time, "process": time.process_time}[args.clock]
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    fmt = torch.contiguous_format if args.nchw else torch.channels_last
    gen = torch.Generator().manual_seed(0)
    probe = torch.empty(0, dtype=dtype, device=device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cpu={cpu_model()!r} cores={os.cpu_count()} device={device} dtype={dtype} "
          f"threads={torch.get_num_threads()} backend={choose_backend(probe)} "
          f"channels_last={not args.nchw} clock={args.clock} torch={torch.__version__} repeats={args.repeats} "
          f"(minimum kept) load average={load:.1f}")
    if device.type == "cpu" and not args.no_ceiling:
        for layer in args.layers:
            channels, dilation = LAYERS[layer]
            for batch in args.batches:
                print(f"ceiling {layer} B={batch}: "
                      f"{ceiling(channels, dilation, batch, args.size, max(3, args.repeats // 2), clock)}", flush=True)
    print(f"{'layer':6} {'B':>2} {'density':>7} {'dense ms':>9} {'perf ms':>9} "
          f"{'ratio':>6} {'ideal':>6} {'target':>7}  ok")
    misses = 0
    for layer in args.layers:
        channels, dilation = LAYERS[layer]
        weight = (torch.randn(channels, channels, 3, 3, generator=gen) * 0.02).to(device, dtype)
        bias = (torch.randn(channels, generator=gen) * 0.1).to(device, dtype)
        packed = PackedConv(weight, bias, dilation)  # once per layer, as pag_model.sparse does
        rows = tap_major(weight)
        for batch in args.batches:
            x = torch.randn(batch, channels, args.size, args.size, generator=gen).to(device, dtype)
            x = x.contiguous(memory_format=fmt)
            for density in args.densities:
                mask = (torch.rand(batch, args.size, args.size, generator=gen) < density).to(device)
                if density >= 1.0:
                    mask[:] = True
                real = mask.float().mean().item()
                with torch.inference_mode():
                    in_place = usable(x) and not args.nchw

                    def perforated() -> torch.Tensor:
                        if in_place:  # x's values drift from repeat to repeat; times do not
                            return packed.run_into_(x, x, mask, relu=True)
                        return perforated_conv2d(x, weight, mask, bias=bias, dilation=dilation, fill=x,
                                                 relu=True, weight_rows=rows)

                    t_dense, t_perf = time_pair(
                        lambda: torch.relu_(F.conv2d(x, weight, bias, padding=dilation, dilation=dilation)),
                        perforated,
                        args.repeats,
                        device,
                        clock,
                    )
                ratio = t_perf / t_dense
                goal = target(density, dtype)
                ok = "" if goal is None else ("yes" if ratio <= goal else "NO")
                misses += ok == "NO"
                goal_s = "" if goal is None else f"{goal:.3f}"
                print(f"{layer:6} {batch:>2} {real:7.3f} {t_dense * 1e3:9.2f} {t_perf * 1e3:9.2f} "
                      f"{ratio:6.3f} {real:6.3f} {goal_s:>7}  {ok}", flush=True)
    print(f"targets missed: {misses}")


if __name__ == "__main__":
    main()
