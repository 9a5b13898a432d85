"""Perforated convolution as one fused implicit GEMM in Triton (the "triton" backend).

GEMM view (PerforatedCNNs, Figurnov et al. 2016; the implicit-GEMM convolution of CUTLASS
and FlexGEMM, restricted to a list of active pixels):
    rows M    = active pixels, flattened over the batch (`active_indices(mask)`, ascending),
    reduction = k*k*C in tap-major order (ki, kj, c), the columns of `tap_major(weight)`,
    columns N = output channels.
Each program owns a (BLOCK_M, BLOCK_N) tile of Y. For every (tap, channel chunk) it loads
the A tile straight from the channels-last input at the tap's shifted address (border
pixels masked to zero, no gather buffer), the B tile from the (Co, k*k*C) weight rows, and
accumulates with `tl.dot` in fp32 (tensor cores for bf16/fp16; for fp32 TF32 when
`torch.backends.cuda.matmul.allow_tf32` is set, else full-precision "ieee"). The epilogue
adds the bias, applies ReLU, casts and stores each row at its pixel's address in `out`, which
the caller pre-filled with `fill` or zeros (inactive pixels are never touched).

Few active pixels give few output tiles, too few to fill the GPU: then the reduction is
split over `split_k` programs that atomically add fp32 partial sums into a (M, Co) workspace,
and a second small kernel applies bias, ReLU and the scatter.

No host synchronisation: the grid depends only on M = index.numel(), known once the
caller's nonzero() has produced the index (that is the one sync).

Triton's interpreter (TRITON_INTERPRET=1) runs the same kernels on CPU tensors; it is read
when the kernels are first needed, not at import, and the kernels are built once per mode.
The kernels call only builtins of triton.language (no tl.cdiv, tl.zeros: those are @jit
functions wrapped when triton was imported, which Triton 3.8's interpreter refuses to call
if TRITON_INTERPRET was set after that import).
Under the interpreter autotuning is bypassed (one small configuration). Importing this
module imports triton (lazily imported by `backends.py` only when the backend is asked for).
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Optional

import torch
import triton
import triton.language as tl
import triton.testing

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# PAG_TRITON_AUTOTUNE=0: take the largest block that fits the shape, benchmark nothing
# (for test matrices of many tiny shapes; each autotuned shape compiles every config).
AUTOTUNE_ENV = "PAG_TRITON_AUTOTUNE"
# PAG_TRITON_CONFIG=BLOCK_M,BLOCK_N,BLOCK_K,warps,stages pins one configuration (tests pin a
# small one so that a matrix of dtypes and epilogues compiles one kernel each).
CONFIG_ENV = "PAG_TRITON_CONFIG"

# Under the interpreter: small tiles, so the tests exercise ragged channel chunks and
# several output-channel tiles with tiny tensors.
INTERPRET_CONFIG = dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16)
# Split-K path: a small fixed M tile (few rows by construction).
SPLIT_BLOCK_M = 32
MAX_SPLIT_K = 16


def interpreting() -> bool:
    """True when TRITON_INTERPRET is set now (kernels then run on CPU tensors)."""
    return bool(triton.knobs.runtime.interpret)


def _perforated_gemm(
    x_ptr, w_ptr, bias_ptr, out_ptr, index_ptr, ws_ptr,
    M, C, H, W, N,
    xs0, xs2, xs3,
    wsn, wsk,
    os0, os1, os2, os3,
    dilation, pad, m_bucket,
    split_k,
    KSIZE: tl.constexpr, HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
    ATOMIC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One (BLOCK_M, BLOCK_N) tile of Y (or its share of the reduction when split_k > 1).

    x: channels-last (B, C, H, W), strides xs0 (b), xs2 (h), xs3 (w), channel stride 1.
    w: (N, k*k*C) tap-major weight rows, strides wsn, wsk. index: (M,) int64 flat pixels.
    out: (B, N, H, W), strides os0..os3. ws: (M, N) fp32 workspace (ATOMIC only).
    split_k: programs sharing one tile's reduction (grid axis 2); ATOMIC: split_k > 1, partial
    sums are atomically added to ws instead of the fused epilogue (a runtime int, so each split
    count reuses the compiled kernel).
    m_bucket: unused in the body; the autotuner's key (M rounded to a power of two).
    UPCAST: multiply in fp32 (set under the interpreter for bf16, whose dot in Triton 3.8's
    interpreter multiplies the raw uint16 storage; products of bf16 values are exact in fp32,
    so the result equals the tensor-core bf16 x bf16 -> fp32 product up to summation order).
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_ok = rm < M
    n_ok = rn < N
    pixel = tl.load(index_ptr + rm, mask=m_ok, other=0)
    plane = H * W
    bb = pixel // plane
    hh0 = (pixel % plane) // W - pad
    ww0 = pixel % W - pad
    x_rows = x_ptr + bb * xs0
    w_cols = w_ptr + rn * wsn

    chunks = (C + BLOCK_K - 1) // BLOCK_K
    total = KSIZE * KSIZE * chunks
    per = (total + split_k - 1) // split_k
    start = pid_k * per
    stop = tl.minimum(start + per, total)
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for it in range(start, stop):
        tap = it // chunks
        c0 = (it - tap * chunks) * BLOCK_K
        hh = hh0 + (tap // KSIZE) * dilation
        ww = ww0 + (tap % KSIZE) * dilation
        row_ok = m_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        cc = c0 + rk
        c_ok = cc < C
        a = tl.load(
            (x_rows + hh * xs2 + ww * xs3)[:, None] + cc[None, :],
            mask=row_ok[:, None] & c_ok[None, :],
            other=0.0,
        )
        b = tl.load(
            w_cols[None, :] + (tap * C + cc)[:, None] * wsk,
            mask=c_ok[:, None] & n_ok[None, :],
            other=0.0,
        )
        if UPCAST:  # interpreter only: its dot multiplies bf16's raw uint16 storage
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    if not ATOMIC:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        if RELU:
            acc = tl.maximum(acc, 0.0)
        hh_out = hh0 + pad
        ww_out = ww0 + pad
        dst = (bb * os0 + hh_out * os2 + ww_out * os3)[:, None] + (rn * os1)[None, :]
        tl.store(out_ptr + dst, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])
    else:
        ws = ws_ptr + rm[:, None] * N + rn[None, :]
        tl.atomic_add(ws, acc, mask=m_ok[:, None] & n_ok[None, :])


def _split_epilogue(
    ws_ptr, bias_ptr, out_ptr, index_ptr,
    M, H, W, N,
    os0, os1, os2, os3,
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """out[pixel] = relu(ws + bias) cast to out's dtype, for a (BLOCK_M, BLOCK_N) tile of ws."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = rm < M
    n_ok = rn < N
    ok = m_ok[:, None] & n_ok[None, :]
    acc = tl.load(ws_ptr + rm[:, None] * N + rn[None, :], mask=ok, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    pixel = tl.load(index_ptr + rm, mask=m_ok, other=0)
    plane = H * W
    dst = ((pixel // plane) * os0 + ((pixel % plane) // W) * os2 + (pixel % W) * os3)[:, None]
    tl.store(out_ptr + dst + (rn * os1)[None, :], acc.to(out_ptr.dtype.element_ty), mask=ok)


def _config(m: int, n: int, k: int, warps: int, stages: int) -> Any:
    return triton.Config(dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k), num_warps=warps, num_stages=stages)


# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages), smallest first; (128, 128, 32) is the last
# within 160 KiB, PAG_TRITON_AUTOTUNE=0's choice for large shapes. Few configs: each one is
# compiled (seconds to tens of seconds for fp32) the first time a dtype/k/epilogue needs it.
FUSED_SHAPES = [
    (32, 32, 32, 4, 3), (64, 32, 32, 4, 3), (64, 64, 64, 4, 3), (128, 64, 64, 4, 3),
    (64, 128, 64, 4, 3), (128, 128, 32, 8, 4), (128, 128, 64, 8, 3),
]
SPLIT_SHAPES = [(SPLIT_BLOCK_M, 32, 32, 4, 3), (SPLIT_BLOCK_M, 64, 64, 4, 3), (SPLIT_BLOCK_M, 128, 64, 4, 3)]
# Autotuning times each candidate for ~30 ms instead of Triton's default ~125 ms.
BENCH = dict(warmup=5, rep=25)


def _fits(config: Any, rows: int, out_channels: int, channels: int) -> bool:
    """A block no larger than needed: BLOCK_M <= rows, BLOCK_N <= Co, BLOCK_K <= C (rounded up, >= 32)."""
    kw = config.kwargs
    return (kw["BLOCK_M"] <= max(32, rows) and kw["BLOCK_N"] <= max(32, triton.next_power_of_2(out_channels))
            and kw["BLOCK_K"] <= max(32, triton.next_power_of_2(channels)))


def _shared_bytes(config: Any) -> int:
    """Shared memory of the pipelined A and B tiles in fp32 (the largest element size)."""
    kw = config.kwargs
    return (kw["BLOCK_M"] + kw["BLOCK_N"]) * kw["BLOCK_K"] * 4 * config.num_stages


def parse_config(text: str) -> tuple[int, int, int, int, int]:
    """"BLOCK_M,BLOCK_N,BLOCK_K,warps,stages" -> ints; ValueError naming PAG_TRITON_CONFIG if malformed."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 5 or min(values[:3]) < 16 or any(v & (v - 1) for v in values[:4]) or values[4] < 1:
        raise ValueError(
            f"{CONFIG_ENV}={text!r}: expected BLOCK_M,BLOCK_N,BLOCK_K,warps,stages, blocks and warps "
            "powers of two, blocks >= 16, e.g. 64,64,64,4,3"
        )
    return values  # type: ignore[return-value]


def _prune(configs: list[Any], named_args: dict, **kwargs: Any) -> list[Any]:
    """Drop configs whose blocks are mostly padding for this shape. PAG_TRITON_AUTOTUNE=0 keeps
    only the last one that fits and needs <= 160 KiB of shared memory in fp32 (no benchmarking;
    the autotuner skips configs that run out of resources, a single config cannot)."""
    pinned = os.environ.get(CONFIG_ENV, "").strip()
    if pinned:
        return [_config(*parse_config(pinned))]
    rows, n, c = named_args["m_bucket"], named_args["N"], named_args["C"]
    kept = [cfg for cfg in configs if _fits(cfg, rows, n, c)] or configs[:1]
    if os.environ.get(AUTOTUNE_ENV, "1").strip() == "0":
        safe = [cfg for cfg in kept if _shared_bytes(cfg) <= 160 * 1024] or kept[:1]
        return safe[-1:]
    return kept


@functools.lru_cache(maxsize=2)
def _kernels(interpret: bool) -> dict[str, Any]:
    """The jitted kernels for the current mode (interpreted or compiled), built once per mode.

    triton.jit reads TRITON_INTERPRET when it wraps a function, so the wrapping happens here,
    on first use, rather than at import. On a GPU the GEMM is autotuned over the block sizes
    that fit the shape (key: M rounded to a power of two, Co, C, k, split, precision, dtypes).
    """
    # M changes with every mask: no recompile when it happens to be divisible by 16.
    gemm = triton.jit(_perforated_gemm, do_not_specialize=["M", "split_k"])
    epilogue = triton.jit(_split_epilogue, do_not_specialize=["M"])
    if interpret:
        return dict(fused=gemm, split=gemm, epilogue=epilogue)
    key = ["m_bucket", "N", "C", "KSIZE", "split_k", "PRECISION", "UPCAST"]
    prune = {"early_config_prune": _prune}
    fused = [_config(*shape) for shape in FUSED_SHAPES]
    split = [_config(*shape) for shape in SPLIT_SHAPES]
    bench = functools.partial(triton.testing.do_bench, **BENCH)
    return dict(
        fused=triton.autotune(configs=fused, key=key, prune_configs_by=prune, do_bench=bench)(gemm),
        split=triton.autotune(configs=split, key=key, prune_configs_by=prune, reset_to_zero=["ws_ptr"],
                              do_bench=bench)(gemm),
        epilogue=epilogue,
    )


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"  # ignored by tl.dot for fp16/bf16 operands


def choose_split_k(rows: int, out_channels: int, iterations: int, device: torch.device) -> int:
    """How many programs share one tile's reduction: > 1 only when output tiles are too few.

    Args:
        rows: active pixels M. out_channels: N. iterations: k*k*ceil(C/64), the reduction steps.
        device: where the kernel runs (its SM count sets "too few").
    """
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    tiles = triton.cdiv(rows, 64) * triton.cdiv(out_channels, 64)
    if 2 * tiles > sms or iterations < 8:
        return 1
    return int(max(1, min(MAX_SPLIT_K, sms // tiles, iterations // 4)))


def perforated_conv2d_triton_(
    out: torch.Tensor,
    x: torch.Tensor,
    weight_rows: torch.Tensor,
    index: torch.Tensor,
    bias: Optional[torch.Tensor],
    k: int,
    dilation: int,
    relu: bool,
    split_k: int = 0,
) -> torch.Tensor:
    """Write relu?(conv + bias) at the pixels in `index` into `out` in place; returns `out`.

    Args:
        out: (B, Co, H, W), any strides, pre-filled with the values of inactive pixels.
        x: (B, C, H, W) channels-last (unit channel stride), out's dtype and device.
        weight_rows: (Co, k*k*C) tap-major weight, `tap_major(weight)`.
        index: (M,) int64 flat pixel indices b*H*W + h*W + w.
        bias: (Co,) or None. k: odd kernel size. dilation: >= 1. relu: fuse a ReLU.
        split_k: programs per tile's reduction; 0 chooses (1 unless tiles are few).
    """
    batch, channels, height, width = x.shape
    out_channels = out.shape[1]
    if x.stride(1) != 1 and channels != 1:
        raise ValueError(f"perforated_conv2d_triton_: x must be channels-last, strides {x.stride()}")
    if x.dtype not in DTYPES or out.dtype != x.dtype or weight_rows.dtype != x.dtype:
        raise TypeError(
            f"perforated_conv2d_triton_: x, out and weight_rows must share one of {DTYPES}, got "
            f"{x.dtype}, {out.dtype}, {weight_rows.dtype}"
        )
    if tuple(weight_rows.shape) != (out_channels, k * k * channels):
        raise ValueError(
            f"perforated_conv2d_triton_: weight_rows {tuple(weight_rows.shape)} must be "
            f"(Co, k*k*C) = ({out_channels}, {k * k * channels})"
        )
    rows = index.numel()
    if rows == 0:
        return out
    interpret = interpreting()
    kernels = _kernels(interpret)
    if split_k <= 0:
        split_k = 1 if interpret else choose_split_k(rows, out_channels, k * k * triton.cdiv(channels, 64), x.device)
    has_bias = bias is not None
    bias_arg = bias.contiguous() if has_bias else weight_rows  # never read without a bias
    ws = torch.zeros((rows, out_channels), dtype=torch.float32, device=x.device) if split_k > 1 else out
    args = (
        x, weight_rows, bias_arg, out, index, ws,
        rows, channels, height, width, out_channels,
        x.stride(0), x.stride(2), x.stride(3),
        weight_rows.stride(0), weight_rows.stride(1),
        out.stride(0), out.stride(1), out.stride(2), out.stride(3),
        dilation, dilation * (k // 2), triton.next_power_of_2(rows), split_k,
    )
    flags = dict(
        KSIZE=k, HAS_BIAS=has_bias, RELU=relu, ATOMIC=split_k > 1, PRECISION=_precision(x.dtype),
        UPCAST=interpret and x.dtype == torch.bfloat16,
    )
    extra = INTERPRET_CONFIG if interpret else {}

    def grid(meta: dict) -> tuple[int, int, int]:
        return (triton.cdiv(rows, meta["BLOCK_M"]), triton.cdiv(out_channels, meta["BLOCK_N"]), split_k)

    with torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext():
        kernels["fused" if split_k == 1 else "split"][grid](*args, **flags, **extra)
        if split_k > 1:
            block_m, block_n = (32, 16) if interpret else (64, 64)
            kernels["epilogue"][(triton.cdiv(rows, block_m), triton.cdiv(out_channels, block_n))](
                ws, bias_arg, out, index, rows, height, width, out_channels,
                out.stride(0), out.stride(1), out.stride(2), out.stride(3),
                HAS_BIAS=has_bias, RELU=relu, BLOCK_M=block_m, BLOCK_N=block_n,
            )
    return out

