"""GPU layer benchmark: perforated 3x3 convs (triton, cuda backends) against cuDNN, CUDA events.

Layers as in PAG-ResNet-50 at output stride 8 (Res4: 256 -> 256, dilation 2; Res5: 512 -> 512,
dilation 4), batch 1 and 8, 64x64 and 128x256 feature maps, bf16 and TF32 (fp32 tensors with
torch's TF32 switches on for both cuDNN and the kernels), densities 0.1 to 1.0.

Every form computes what a gated layer needs, channels-last, with cudnn.benchmark on:
    dense       relu(conv2d(x, w, b)) by cuDNN at every pixel (the `where` with the fill is
                left out, so dense is timed at its cheapest)
    triton/cuda the public `perforated_conv2d(x, w, mask, b, fill=x, relu=True, weight_rows)`
                forced onto that backend: nonzero (the one host sync), the fill copy, the kernel
    kernel      the Triton kernel alone on a precomputed index and output
    mm          torch.mm of the dense GEMM (B*H*W, 9C) x (9C, Co): the GEMM ceiling of this GPU
Times are medians of `--repeats` calls after warm-up (and after Triton's autotuning), each
bracketed by CUDA events. The target (issue 13): triton <= 1.3 x density x dense at batch 8
in bf16 for densities 0.25-0.75. `--smoke` runs a tiny layer on CPU through Triton's
interpreter with wall-clock timing, to check this script without a GPU (its numbers mean nothing).

    .venv/bin/python benchmarks/gpu_layers.py --out benchmarks/results/gpu_layers.md
    .venv/bin/python benchmarks/gpu_layers.py --smoke --out /tmp/smoke.md
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F


from pag_model.ops import BACKEND_ENV, perforated_conv2d, tap_major
from pag_model.ops.reference import active_indices


@dataclass(frozen=True)
class Layer:
    """One 3x3 conv of the network: name, channels in = out, dilation."""

    name: str
    channels: int
    dilation: int


LAYERS = {"res4": Layer("res4", 256, 2), "res5": Layer("res5", 512, 4)}
SMOKE_LAYER = Layer("smoke", 16, 2)
DENSITIES = (0.1, 0.25, 0.5, 0.75, 1.0)
PRECISIONS = {"bf16": torch.bfloat16, "tf32": torch.float32}
TARGET = 1.3  # triton / dense <= TARGET x density at batch 8, bf16, densities 0.25-0.75


@dataclass
class Row:
    """One measured point; times in ms (None: not measured)."""

    precision: str
    layer: str
    batch: int
    size: tuple[int, int]
    density: float
    dense: float
    mm: Optional[float]
    times: dict[str, Optional[float]]  # backend -> op time; "kernel" -> Triton kernel alone


def timer(device: torch.device) -> Callable[[Callable[[], object], int], float]:
    """Median time in ms of `repeats` calls of fn: CUDA events on a GPU, wall clock on CPU."""

    def cuda_time(fn: Callable[[], object], repeats: int) -> float:
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    def wall_time(fn: Callable[[], object], repeats: int) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    return cuda_time if device.type == "cuda" else wall_time


def make_mask(batch: int, height: int, width: int, density: float, device: torch.device) -> torch.Tensor:
    """(B, H, W) bool with exactly round(density * pixels) active pixels, spread at random."""
    total = batch * height * width
    flat = torch.zeros(total, dtype=torch.bool, device=device)
    flat[torch.randperm(total, device=device)[: round(density * total)]] = True
    return flat.reshape(batch, height, width)


def measure(
    layer: Layer,
    batch: int,
    size: tuple[int, int],
    precision: str,
    densities: Sequence[float],
    backends: Sequence[str],
    device: torch.device,
    repeats: int,
    warmup: int,
) -> list[Row]:
    """All densities of one (layer, batch, size, precision)."""
    dtype = PRECISIONS[precision]
    height, width = size
    c, d = layer.channels, layer.dilation
    x = torch.randn(batch, c, height, width, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    weight = (torch.randn(c, c, 3, 3, device=device, dtype=dtype) * (2.0 / (9 * c)) ** 0.5).contiguous(
        memory_format=torch.channels_last
    )
    bias = torch.randn(c, device=device, dtype=dtype) * 0.1
    rows = tap_major(weight)
    clock = timer(device)

    def dense() -> torch.Tensor:
        return torch.relu(F.conv2d(x, weight, bias, padding=d, dilation=d))

    for _ in range(warmup):
        dense()
    dense_ms = clock(dense, repeats)
    mm_ms = None
    if device.type == "cuda":
        a = torch.randn(batch * height * width, 9 * c, device=device, dtype=dtype)
        b = rows.t()
        for _ in range(warmup):
            torch.mm(a, b)
        mm_ms = clock(lambda: torch.mm(a, b), repeats)
        del a

    out_rows = []
    for density in densities:
        mask = make_mask(batch, height, width, density, device)
        times: dict[str, Optional[float]] = {}
        for backend in backends:
            os.environ[BACKEND_ENV] = backend

            def op() -> torch.Tensor:
                return perforated_conv2d(x, weight, mask, bias, d, fill=x, relu=True, weight_rows=rows)

            try:
                for _ in range(warmup):
                    op()
                times[backend] = clock(op, repeats)
            except Exception as exc:  # a backend that fails here is reported, not fatal
                print(f"  {backend} failed on {layer.name} B={batch} {size} {precision} d={density}: {exc}")
                times[backend] = None
        if "triton" in backends:
            times["kernel"] = kernel_time(x, rows, mask, bias, d, clock, repeats, warmup)
        os.environ.pop(BACKEND_ENV, None)
        row = Row(precision, layer.name, batch, size, density, dense_ms, mm_ms, times)
        print(format_row(row, backends), flush=True)
        out_rows.append(row)
    return out_rows


def kernel_time(x, rows, mask, bias, dilation, clock, repeats: int, warmup: int) -> Optional[float]:
    """The Triton kernel alone: index and output prepared outside the timed region."""
    from pag_model.ops import triton_conv

    index = active_indices(mask)
    out = torch.empty_like(x)

    def run() -> torch.Tensor:
        return triton_conv.perforated_conv2d_triton_(out, x, rows, index, bias, 3, dilation, True)

    try:
        for _ in range(warmup):
            run()
        return clock(run, repeats)
    except Exception as exc:
        print(f"  triton kernel failed: {exc}")
        return None


def ratio(t: Optional[float], dense: float) -> str:
    return "-" if t is None else f"{t:.3f} ({t / dense:.2f})"


def format_row(row: Row, backends: Sequence[str]) -> str:
    cells = [row.precision, row.layer, str(row.batch), f"{row.size[0]}x{row.size[1]}", f"{row.density:.2f}",
             f"{row.dense:.3f}", "-" if row.mm is None else f"{row.mm / row.dense:.2f}"]
    cells += [ratio(row.times.get(b), row.dense) for b in backends]
    if "triton" in backends:
        cells.append(ratio(row.times.get("kernel"), row.dense))
    return "| " + " | ".join(cells) + " |"


def target_lines(rows: Sequence[Row]) -> list[str]:
    """The issue's GPU target, checked on the rows it covers."""
    covered = [r for r in rows if r.precision == "bf16" and r.batch == 8 and 0.25 <= r.density <= 0.75]
    lines = []
    for r in covered:
        t = r.times.get("triton")
        if t is None:
            lines.append(f"- {r.layer} {r.size[0]}x{r.size[1]} d={r.density:.2f}: triton not measured")
            continue
        limit = TARGET * r.density
        verdict = "meets" if t / r.dense <= limit else "MISSES"
        lines.append(f"- {r.layer} {r.size[0]}x{r.size[1]} d={r.density:.2f}: triton/dense = "
                     f"{t / r.dense:.2f}, target <= {limit:.2f}: {verdict}")
    return lines or ["- (no bf16 batch-8 rows with density 0.25-0.75 were measured)"]


def report(rows: Sequence[Row], backends: Sequence[str], device: torch.device, command: str, smoke: bool) -> str:
    import triton

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'})"
    head = ["precision", "layer", "batch", "map", "density", "cuDNN dense ms", "mm/dense"]
    head += [f"{b} ms (/dense)" for b in backends]
    if "triton" in backends:
        head.append("triton kernel ms (/dense)")
    lines = [
        "# GPU layer benchmark: perforated conv vs dense cuDNN",
        "",
        "SMOKE RUN on CPU through Triton's interpreter: the times mean nothing." if smoke else "",
        f"- device: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}, triton {triton.__version__}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; command: `{command}`",
        "- times: median ms per call (CUDA events), channels-last, bias + ReLU fused, fill = input;",
        "  (x.xx) = ratio to dense cuDNN at the same precision; the ideal ratio is the density.",
        "- mm/dense: torch.mm of the dense GEMM (B*H*W, 9C) x (9C, Co) over cuDNN, the GEMM ceiling.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += [format_row(r, backends) for r in rows]
    lines += ["", f"Target: triton <= {TARGET} x density x dense, batch 8, bf16, densities 0.25-0.75:", ""]
    lines += target_lines(rows)
    return "\n".join(line for line in lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 1], help="batch 8 first: the target's rows")
    parser.add_argument("--sizes", nargs="+", default=["64x64", "128x256"], help="HxW feature maps")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    parser.add_argument("--densities", nargs="+", type=float, default=list(DENSITIES))
    parser.add_argument("--backends", nargs="+", default=["triton", "cuda"], choices=["triton", "cuda", "reference"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=None, help="Markdown report path (rewritten after every shape)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds; start no new shape after this (the report says what was left out)")
    parser.add_argument("--smoke", action="store_true", help="tiny layer on CPU via Triton's interpreter")
    args = parser.parse_args(argv)
    command = "benchmarks/gpu_layers.py " + " ".join(argv if argv is not None else sys.argv[1:])

    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
        device = torch.device("cpu")
        plan = [(SMOKE_LAYER, 1, (8, 8), "tf32")]
        densities, backends, repeats, warmup = [0.5, 1.0], ["triton", "reference"], 1, 1
    else:
        if not torch.cuda.is_available():
            print("gpu_layers: no GPU found (torch.cuda.is_available() is False); use --smoke to check the script")
            return 2
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
        plan = [(LAYERS[name], b, size, p) for p in args.precisions for name in args.layers
                for b in args.batches for size in sizes]
        densities, backends, repeats, warmup = args.densities, args.backends, args.repeats, args.warmup

    saved_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    rows: list[Row] = []
    left_out: list[str] = []
    start = time.monotonic()
    try:
        for layer, batch, size, precision in plan:
            if args.time_limit is not None and time.monotonic() - start > args.time_limit:
                left_out.append(f"{precision} {layer.name} B={batch} {size[0]}x{size[1]}")
                continue
            tf32 = precision == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            torch.manual_seed(0)
            rows += measure(layer, batch, size, precision, densities, backends, device, repeats, warmup)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if args.out:
                write(args.out, report(rows, backends, device, command, args.smoke))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_tf32
    text = report(rows, backends, device, command, args.smoke)
    if left_out:
        text += f"\nNot measured (past --time-limit {args.time_limit:g}s): {'; '.join(left_out)}\n"
    if args.out:
        write(args.out, text)
        print(f"report written to {args.out}")
    else:
        print(text)
    return 0


def write(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


if __name__ == "__main__":
    sys.exit(main())
