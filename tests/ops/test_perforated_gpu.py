"""The triton and cuda backends on a GPU against the dense F.conv2d-then-mask definition.

All cuda-marked: skipped without a GPU (`make gpu-check` runs them). The oracle is computed
in float64 from the same (rounded) inputs; tolerances depend on the dtype (the kernels
accumulate in fp32; TF32 keeps 10 mantissa bits of each operand).
"""
from __future__ import annotations

import itertools

import pytest
import torch

from pag_model.ops import BACKEND_ENV, choose_backend, perforated_conv2d, tap_major
from pag_model.ops.reference import active_indices
from tests.support.perforated import dense_then_mask, layout, make_mask

pytestmark = pytest.mark.cuda

TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
}
TF32_TOL = dict(rtol=1e-2, atol=1e-2)
# Pinned where a test needs correctness, not speed: each autotuned shape compiles every
# candidate (seconds each), which `make gpu-check`'s time budget cannot afford many times.
SMALL = "32,32,32,4,3"


@pytest.fixture
def tf32(request):
    """Set torch's TF32 switches (cuBLAS/Triton and cuDNN) for the test, restore after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = request.param
    yield request.param
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def oracle(x, weight, mask, bias, dilation, fill, relu) -> torch.Tensor:
    up = lambda t: None if t is None else t.double()  # noqa: E731
    return dense_then_mask(up(x), up(weight), mask, up(bias), dilation, up(fill), relu)


def test_triton_is_the_default_on_cuda() -> None:
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        assert choose_backend(torch.empty(1, 1, 1, 1, device="cuda", dtype=dtype)) == "triton"
    # float64 is not a Triton dtype here: the cuda extension takes it.
    assert choose_backend(torch.empty(1, 1, 1, 1, device="cuda", dtype=torch.float64)) in ("cuda", "reference")


@pytest.mark.parametrize("tf32", [False], indirect=True)
@pytest.mark.parametrize("density", [0.0, 0.01, 0.5, 1.0])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("dilation", [1, 2, 4, 10])
def test_triton_matches_dense_then_mask(monkeypatch, tf32, dilation: int, k: int, density: float) -> None:
    monkeypatch.setenv(BACKEND_ENV, "triton")
    monkeypatch.setenv("PAG_TRITON_CONFIG", SMALL)  # one small kernel per dtype/k/epilogue
    cases = itertools.product([1, 3], ["contiguous", "strided", "channels_last"],
                              [torch.float32, torch.float16, torch.bfloat16], [False, True])
    for batch, kind, dtype, with_fill in cases:
        x = layout(torch.randn(batch, 40, 13, 11, device="cuda", dtype=dtype), kind)
        weight = torch.randn(36, 40, k, k, device="cuda", dtype=dtype) * 0.1
        mask = make_mask(batch, 13, 11, density, device="cuda")
        bias = torch.randn(36, device="cuda", dtype=dtype) if with_fill else None
        fill = torch.randn(batch, 36, 13, 11, device="cuda", dtype=dtype) if with_fill else None
        got = perforated_conv2d(x, weight, mask, bias=bias, dilation=dilation, fill=fill, relu=with_fill)
        expected = oracle(x, weight, mask, bias, dilation, fill, with_fill)
        msg = f"B={batch} layout={kind} dtype={dtype} fill={with_fill}"
        torch.testing.assert_close(got.double(), expected, **TOL[dtype], msg=lambda m: f"{msg}: {m}")
        assert got.is_contiguous(memory_format=torch.channels_last) == (kind == "channels_last")


@pytest.mark.parametrize("tf32", [True], indirect=True)
def test_triton_tf32(monkeypatch, tf32) -> None:
    monkeypatch.setenv(BACKEND_ENV, "triton")
    monkeypatch.setenv("PAG_TRITON_CONFIG", SMALL)
    x = torch.randn(2, 64, 17, 19, device="cuda").contiguous(memory_format=torch.channels_last)
    weight = torch.randn(48, 64, 3, 3, device="cuda") * 0.05
    mask = make_mask(2, 17, 19, 0.5, device="cuda")
    got = perforated_conv2d(x, weight, mask, dilation=2, fill=torch.zeros(2, 48, 17, 19, device="cuda"))
    torch.testing.assert_close(got.double(), oracle(x, weight, mask, None, 2, None, False), **TF32_TOL)


@pytest.mark.parametrize("tf32", [False], indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("split_k", [0, 3, 16])
def test_triton_split_k(monkeypatch, tf32, dtype: torch.dtype, split_k: int) -> None:
    """Few rows of a Res4-sized layer: forced and automatic split-K against the definition."""
    from pag_model.ops import triton_conv

    monkeypatch.setenv("PAG_TRITON_CONFIG", SMALL)
    x = torch.randn(1, 256, 64, 64, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(256, 256, 3, 3, device="cuda", dtype=dtype) * 0.02
    bias = torch.randn(256, device="cuda", dtype=dtype)
    fill = torch.randn(1, 256, 64, 64, device="cuda", dtype=dtype)
    mask = make_mask(1, 64, 64, 0.01, device="cuda")  # 41 rows: 4 output tiles of 64 x 64
    out = fill.clone()
    triton_conv.perforated_conv2d_triton_(out, x, tap_major(weight), active_indices(mask), bias, 3, 2, True,
                                          split_k=split_k)
    torch.testing.assert_close(out.double(), oracle(x, weight, mask, bias, 2, fill, True), **TOL[dtype])


@pytest.mark.parametrize("tf32", [False], indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_res5_layer_autotuned(monkeypatch, tf32, dtype: torch.dtype) -> None:
    """A Res5-sized layer (4 x 512 x 64 x 64, dilation 4) model-style (channels-last, fill = input,
    ReLU): autotuned in bf16 (the benchmark then finds the kernels compiled), one config in fp32."""
    monkeypatch.setenv(BACKEND_ENV, "triton")
    if dtype == torch.float32:
        monkeypatch.setenv("PAG_TRITON_AUTOTUNE", "0")
    x = torch.randn(4, 512, 64, 64, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(512, 512, 3, 3, device="cuda", dtype=dtype) * 0.02
    mask = make_mask(4, 64, 64, 0.5, device="cuda")
    got = perforated_conv2d(x, weight, mask, dilation=4, fill=x, relu=True)
    torch.testing.assert_close(got.double(), oracle(x, weight, mask, None, 4, x, True), **TOL[dtype])


def test_triton_gradients_are_the_references(monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "triton")
    monkeypatch.setenv("PAG_TRITON_CONFIG", SMALL)
    opts = dict(device="cuda", requires_grad=True)
    x, weight = torch.randn(2, 8, 9, 10, **opts), torch.randn(6, 8, 3, 3, **opts)
    bias, fill = torch.randn(6, **opts), torch.randn(2, 6, 9, 10, **opts)
    mask = make_mask(2, 9, 10, 0.5, device="cuda")
    grad_out = torch.randn(2, 6, 9, 10, device="cuda")
    leaves = (x, weight, bias, fill)
    got = torch.autograd.grad(perforated_conv2d(x, weight, mask, bias, 2, fill, True), leaves, grad_out)
    ref = torch.autograd.grad(dense_then_mask(x, weight, mask, bias, 2, fill, True), leaves, grad_out)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-3)


def test_opcheck_on_cuda(monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "triton")
    monkeypatch.setenv("PAG_TRITON_CONFIG", SMALL)
    x = torch.randn(2, 8, 7, 6, device="cuda", requires_grad=True)
    weight = torch.randn(4, 8, 3, 3, device="cuda", requires_grad=True)
    mask = make_mask(2, 7, 6, 0.5, device="cuda")
    torch.library.opcheck(torch.ops.pag.perforated_conv2d.default, (x, weight, mask, None, 2, None, True, None))
