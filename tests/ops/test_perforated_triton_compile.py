"""The Triton kernels compile for the GPUs we build for (sm_80, sm_90) on a machine without one.

Triton lowers to PTX and runs its bundled ptxas without a driver, so CI checks the GPU code
path (types, dot shapes, the split-K atomics) where the interpreter cannot: the interpreter
runs the Python body, not the compiler. With the divisibility hints Triton's launcher gives
aligned channels-last tensors, the bf16 GEMM on sm_90 must use asynchronous copies
(the software pipeline) and warp-group MMA (wgmma) - the fused-gather design relies on both.
Compiling is not running: speed and results on a GPU are the cuda-marked tests' business.
"""
from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from pag_model.ops import triton_conv  # noqa: E402

pytestmark = pytest.mark.slow

CONSTEXPRS = ("KSIZE", "HAS_BIAS", "RELU", "ATOMIC", "PRECISION", "UPCAST", "BLOCK_M", "BLOCK_N", "BLOCK_K")
ALIGNED = ("x_ptr", "w_ptr", "bias_ptr", "out_ptr", "index_ptr", "ws_ptr", "C", "N", "xs0", "xs2", "xs3", "wsn",
           "os0", "os2", "os3")


def compile_gemm(dtype: str, arch: int, atomic: bool, precision: str, block: tuple[int, int, int, int, int]):
    fn = triton.jit(triton_conv._perforated_gemm)
    pointers = {"x_ptr": dtype, "w_ptr": dtype, "bias_ptr": dtype, "out_ptr": dtype, "index_ptr": "i64",
                "ws_ptr": "fp32"}
    signature = {
        name: "*" + pointers[name] if name in pointers else "constexpr" if name in CONSTEXPRS else "i32"
        for name in fn.arg_names
    }
    bm, bn, bk, warps, stages = block
    constexprs = dict(KSIZE=3, HAS_BIAS=True, RELU=True, ATOMIC=atomic, PRECISION=precision, UPCAST=False,
                      BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in ALIGNED}
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32),
                          options=dict(num_warps=warps, num_stages=stages))


def test_bf16_gemm_on_sm90_is_pipelined_with_wgmma() -> None:
    kernel = compile_gemm("bf16", 90, False, "tf32", (64, 64, 64, 4, 3))
    ttgir = kernel.asm["ttgir"]
    assert "async_copy_global_to_local" in ttgir  # A and B tiles prefetched by cp.async
    assert "warp_group_dot" in ttgir  # Hopper tensor cores
    assert kernel.metadata.shared > 0


@pytest.mark.parametrize("dtype,precision,atomic", [("fp32", "ieee", False), ("fp16", "tf32", True)])
def test_gemm_compiles_for_sm80(dtype: str, precision: str, atomic: bool) -> None:
    kernel = compile_gemm(dtype, 80, atomic, precision, (32, 64, 32, 4, 3))
    # Full-precision fp32 ("ieee") runs on the FMA units, everything else on tensor cores.
    assert ("fma.rn.f32" if precision == "ieee" else "mma.sync") in kernel.asm["ptx"]
    if atomic:
        assert "atom" in kernel.asm["ptx"] or "red." in kernel.asm["ptx"]


def test_split_epilogue_compiles() -> None:
    fn = triton.jit(triton_conv._split_epilogue)
    pointers = {"ws_ptr": "*fp32", "bias_ptr": "*bf16", "out_ptr": "*bf16", "index_ptr": "*i64"}
    signature = {name: pointers.get(name, "constexpr" if name in CONSTEXPRS else "i32") for name in fn.arg_names}
    constexprs = dict(HAS_BIAS=True, RELU=True, BLOCK_M=64, BLOCK_N=64)
    kernel = triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=4))
    assert "st.global" in kernel.asm["ptx"]
