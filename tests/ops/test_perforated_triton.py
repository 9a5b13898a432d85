"""The Triton kernel (the "triton" backend) on CPU tensors through Triton's interpreter.

TRITON_INTERPRET=1 makes triton.jit run kernels in Python/NumPy on CPU tensors; the backend
reads it when its kernels are first needed, so setting it per test (monkeypatch) is enough.
Oracle: the op's definition computed densely in float64 by PyTorch's own convolution
(tests/support/perforated.py) from the same (rounded) inputs. Sizes are tiny: the
interpreter runs every program instance in Python. What the interpreter cannot show: speed,
autotuning, tensor-core rounding (under the interpreter bf16 products are formed in fp32,
the result tensor cores give up to summation order), and GPU memory-model issues; those are
checked by the cuda-marked tests in test_perforated_gpu.py.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from pag_model.ops import BACKEND_ENV, backends, choose_backend, perforated_conv2d, tap_major  # noqa: E402
from pag_model.ops.build import CompiledExtension  # noqa: E402
from pag_model.ops.reference import active_indices  # noqa: E402
from tests.support.perforated import dense_then_mask, layout, make_mask  # noqa: E402

# Against a float64 oracle: fp32 accumulates in fp32; bf16 rounds the output to 8 bits.
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.bfloat16: dict(rtol=1.6e-2, atol=2e-2)}


@pytest.fixture
def interpreted(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv(BACKEND_ENV, "triton")


def oracle(x, weight, mask, bias, dilation, fill, relu) -> torch.Tensor:
    up = lambda t: None if t is None else t.double()  # noqa: E731
    return dense_then_mask(up(x), up(weight), mask, up(bias), dilation, up(fill), relu)


# (batch, dtype, layout, bias+fill+relu): four cases per geometry, so that every batch size,
# dtype, layout and epilogue setting meets every dilation, k and density.
CASES = [
    (1, torch.float32, "contiguous", False),
    (3, torch.float32, "channels_last", True),
    (1, torch.bfloat16, "strided", True),
    (3, torch.bfloat16, "channels_last", False),
]


@pytest.mark.parametrize("density", [0.0, 0.01, 0.5, 1.0])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("dilation", [1, 2, 4, 10])
def test_interpreted_matches_dense_then_mask(interpreted, dilation: int, k: int, density: float) -> None:
    channels, out_channels, height, width = 5, 6, 13, 11  # odd sizes; dilation 10 reaches past the border
    for batch, dtype, kind, epilogue in CASES:
        x = layout(torch.randn(batch, channels, height, width).to(dtype), kind)
        weight = (torch.randn(out_channels, channels, k, k) * 0.5).to(dtype)
        mask = make_mask(batch, height, width, density)
        bias = torch.randn(out_channels).to(dtype) if epilogue else None
        fill = torch.randn(batch, out_channels, height, width).to(dtype) if epilogue else None
        assert choose_backend(x) == "triton"
        got = perforated_conv2d(x, weight, mask, bias=bias, dilation=dilation, fill=fill, relu=epilogue)
        assert got.dtype == dtype and got.shape == (batch, out_channels, height, width)
        expected = oracle(x, weight, mask, bias, dilation, fill, epilogue)
        msg = f"B={batch} dtype={dtype} layout={kind} epilogue={epilogue}"
        torch.testing.assert_close(got.double(), expected, **TOL[dtype], msg=lambda m: f"{msg}: {m}")
        if epilogue:  # ReLU at active pixels only; inactive pixels keep fill exactly
            assert (got[mask[:, None].expand_as(got)] >= 0).all()
            assert torch.equal(got[~mask[:, None].expand_as(got)], fill[~mask[:, None].expand_as(fill)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_interpreted_several_channel_chunks_and_tiles(interpreted, dtype: torch.dtype) -> None:
    """C = 37 and Co = 35 span three K chunks and three N tiles of the interpreter's 16-wide blocks,
    70 active rows span three 32-row M tiles; ReLU without fill (zeros elsewhere)."""
    x = torch.randn(2, 37, 9, 7).to(dtype).contiguous(memory_format=torch.channels_last)
    weight = (torch.randn(35, 37, 3, 3) * 0.2).to(dtype)
    bias = torch.randn(35).to(dtype)
    mask = make_mask(2, 9, 7, 0.55)
    got = perforated_conv2d(x, weight, mask, bias=bias, dilation=3, relu=True)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.double(), oracle(x, weight, mask, bias, 3, None, True), **TOL[dtype])
    assert (got[~mask[:, None].expand_as(got)] == 0).all()


@pytest.mark.parametrize("split_k", [2, 5, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_interpreted_split_k(interpreted, dtype: torch.dtype, split_k: int) -> None:
    """The split-K path (atomic fp32 partial sums + epilogue kernel) gives the same output;
    40 splits of 27 reduction steps leaves some programs with nothing to do."""
    triton_conv = pytest.importorskip("pag_model.ops.triton_conv")
    x = torch.randn(2, 40, 7, 8).to(dtype).contiguous(memory_format=torch.channels_last)
    weight = (torch.randn(20, 40, 3, 3) * 0.2).to(dtype)
    bias = torch.randn(20).to(dtype)
    fill = torch.randn(2, 20, 7, 8).to(dtype)
    mask = make_mask(2, 7, 8, 0.3)
    out = fill.clone()
    triton_conv.perforated_conv2d_triton_(
        out, x, tap_major(weight), active_indices(mask), bias, 3, 2, True, split_k=split_k
    )
    torch.testing.assert_close(out.double(), oracle(x, weight, mask, bias, 2, fill, True), **TOL[dtype])


def test_interpreted_hand_computed_values(interpreted) -> None:
    # Input 1..9 in a 3x3 image, all-ones 3x3 kernel: the centre sums all nine values (45),
    # the top-left corner sees 1, 2, 4, 5 (12). Inactive pixels keep fill (-7).
    x = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    mask[0, 1, 1] = mask[0, 0, 0] = True
    fill = torch.full((1, 1, 3, 3), -7.0)
    out = perforated_conv2d(x, torch.ones(1, 1, 3, 3), mask, bias=torch.tensor([0.5]), fill=fill)
    expected = torch.full((1, 1, 3, 3), -7.0)
    expected[0, 0, 1, 1] = 45.5
    expected[0, 0, 0, 0] = 12.5
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_interpreted_gradients_are_the_references(interpreted) -> None:
    """Forward on the triton backend, backward through the reference graph (fp32)."""
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    bias = torch.randn(4, requires_grad=True)
    fill = torch.randn(2, 4, 5, 6, requires_grad=True)
    mask = make_mask(2, 5, 6, 0.5)
    grad_out = torch.randn(2, 4, 5, 6)
    leaves = (x, weight, bias, fill)
    got = torch.autograd.grad(perforated_conv2d(x, weight, mask, bias, 2, fill, True), leaves, grad_out)
    ref = torch.autograd.grad(dense_then_mask(x, weight, mask, bias, 2, fill, True), leaves, grad_out)
    for name, g, r in zip(("input", "weight", "bias", "fill"), got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4, msg=lambda m: f"grad {name}: {m}")


def test_triton_backend_needs_cuda_or_the_interpreter(monkeypatch) -> None:
    x, w, m = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3), torch.ones(1, 5, 5, dtype=torch.bool)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv(BACKEND_ENV, "triton")
    with pytest.raises(RuntimeError, match="triton backend runs on CUDA tensors"):
        perforated_conv2d(x, w, m)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="triton backend supports"):
        perforated_conv2d(x.double(), w.double(), m)
    # Not forced: CPU tensors never pick triton, even under the interpreter (the cpp backend
    # is stubbed out as unbuildable here, so the choice is triton or reference).
    monkeypatch.delenv(BACKEND_ENV)
    monkeypatch.setattr(backends, "CPP", CompiledExtension("pag_perforated_stub", ["no_such.cpp"], cuda=False))
    monkeypatch.setattr(backends, "_warned", set())  # one warning per process otherwise
    assert backends.problem("triton", x) == ""
    with pytest.warns(UserWarning, match="falling back to the reference backend"):
        assert choose_backend(x) == "reference"


def test_split_k_only_when_output_tiles_are_few(monkeypatch) -> None:
    """132 SMs (an H100/H200): 41 rows x 256 channels = 4 tiles of 64 x 64 -> split 9 ways
    (capped by 36 reduction steps / 4); 4096 rows -> 256 tiles, enough: no split."""
    triton_conv = pytest.importorskip("pag_model.ops.triton_conv")

    class Props:
        multi_processor_count = 132

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props())
    cuda = torch.device("cuda", 0)
    assert triton_conv.choose_split_k(41, 256, 36, cuda) == 9
    assert triton_conv.choose_split_k(4096, 256, 36, cuda) == 1
    assert triton_conv.choose_split_k(41, 256, 4, cuda) == 1  # too little reduction to share
    assert triton_conv.choose_split_k(41, 256, 36, torch.device("cpu")) == 1


def test_autotune_pruning_keeps_blocks_that_fit(monkeypatch) -> None:
    triton_conv = pytest.importorskip("pag_model.ops.triton_conv")
    configs = [triton_conv._config(*shape) for shape in triton_conv.FUSED_SHAPES]
    small = triton_conv._prune(configs, dict(m_bucket=16, N=6, C=8))
    assert [c.kwargs["BLOCK_M"] * 1000 + c.kwargs["BLOCK_N"] for c in small] == [32032]
    big = triton_conv._prune(configs, dict(m_bucket=4096, N=512, C=512))
    assert len(big) == len(configs)
    mid = triton_conv._prune(configs, dict(m_bucket=64, N=256, C=256))
    assert all(c.kwargs["BLOCK_M"] <= 64 for c in mid) and len(mid) >= 4
    monkeypatch.setenv(triton_conv.AUTOTUNE_ENV, "0")
    (only,) = triton_conv._prune(configs, dict(m_bucket=4096, N=512, C=512))
    assert (only.kwargs["BLOCK_M"], only.kwargs["BLOCK_N"], only.kwargs["BLOCK_K"]) == (128, 128, 32)
    assert triton_conv._shared_bytes(only) == (128 + 128) * 32 * 4 * 4  # 128 KiB <= 160 KiB


def test_importing_the_ops_leaves_the_triton_kernels_alone() -> None:
    """pag_model.ops defines the op but imports (and so jits) no Triton kernel module."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, torch, pag_model.ops; assert 'pag_model.ops.triton_conv' not in sys.modules; "
            "assert torch.ops.pag.perforated_conv2d.default is not None")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=True, timeout=120)


def test_pinned_config(monkeypatch) -> None:
    triton_conv = pytest.importorskip("pag_model.ops.triton_conv")
    monkeypatch.setenv(triton_conv.CONFIG_ENV, "32,64,16,4,2")
    (only,) = triton_conv._prune([], dict(m_bucket=4096, N=512, C=512))
    assert only.kwargs == dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=16) and (only.num_warps, only.num_stages) == (4, 2)
    for bad in ("32,64,16,4", "32,48,16,4,2", "8,64,16,4,2", "a,b,c,d,e"):
        with pytest.raises(ValueError, match="PAG_TRITON_CONFIG"):
            triton_conv.parse_config(bad)
