"""The compiled CPU kernel's inference path (`pag_model.ops.cpu.PackedConv`) against F.conv2d.

The oracle is the op's definition computed densely by PyTorch (tests/support/perforated.py),
in float64 from the very same (rounded) inputs, so bf16/fp16 results are judged only by
their own rounding: tolerance relative to the output's largest magnitude, dtype-dependent.
Both GEMM engines (oneDNN packed matmul, at::mm), in place into the input (the PAG block)
and into a separate map (MultiPool), channels-last and NCHW. All compile: marked slow.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from pag_model.ops import BACKEND_ENV
from pag_model.ops.cpu import ENGINE_ENV, PackedConv, usable
from tests.support.perforated import dense_then_mask, make_mask

pytestmark = pytest.mark.slow

# Max error / max |expected|: fp32 GEMM reassociation; bf16 (8-bit mantissa) and fp16
# (11-bit) roundings of the result and of the bias-added value.
REL_TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}


FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


@pytest.fixture(autouse=True)
def _cpp(monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "cpp")


def check(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, msg: str) -> None:
    assert got.dtype == dtype, msg
    scale = expected.abs().max().clamp_min(1e-6)
    err = ((got.double() - expected).abs().max() / scale).item()
    assert err <= REL_TOL[dtype], f"{msg}: relative error {err:.2e} > {REL_TOL[dtype]:.0e}"


@pytest.mark.parametrize("engine", ["onednn", "mm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("k,dilation", [(1, 1), (3, 1), (3, 2), (3, 4)])
def test_packed_conv_matches_dense_then_mask(monkeypatch, engine: str, dtype: torch.dtype, k: int, dilation: int) -> None:
    monkeypatch.setenv(ENGINE_ENV, engine)
    torch.manual_seed(k * 10 + dilation)
    channels, height, width = 6, 13, 11  # odd sizes; Co == C so that out may be x
    cases = itertools.product([1, 3], [0.0, 0.4, 1.0], [False, True], [False, True], ["x", "fill"],
                              ["channels_last", "contiguous"])
    for batch, density, with_bias, relu, target, out_format in cases:
        x = torch.randn(batch, channels, height, width).to(dtype).contiguous(memory_format=torch.channels_last)
        weight = (torch.randn(channels, channels, k, k) * 0.3).to(dtype)
        bias = torch.randn(channels).to(dtype) if with_bias else None
        mask = make_mask(batch, height, width, density)
        fill = x if target == "x" else torch.randn(batch, channels, height, width).to(dtype)
        expected = dense_then_mask(
            x.double(), weight.double(), mask, None if bias is None else bias.double(), dilation,
            fill.double(), relu,
        )
        layer = PackedConv(weight, bias, dilation)
        if target == "x":
            if out_format != "channels_last":
                continue  # in place needs the channels-last input itself
            out = x.clone(memory_format=torch.channels_last)
            got = layer.run_into_(out, out, mask, relu)  # in place: out is the input
        else:
            out = fill.clone(memory_format=FORMATS[out_format])
            got = layer.run_into_(out, x, mask, relu)
        assert got.data_ptr() == out.data_ptr()  # written in place, nothing allocated
        msg = f"engine={engine} dtype={dtype} k={k} d={dilation} B={batch} density={density} " \
              f"bias={with_bias} relu={relu} into={target} out={out_format}"
        check(got, expected, dtype, msg)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nchw_input_and_many_tiles(monkeypatch, dtype: torch.dtype) -> None:
    """An NCHW input (copied once to channels-last) and tiles of 16 pixels across threads."""
    monkeypatch.setenv("PAG_PERFORATED_TILE", "16")
    torch.manual_seed(0)
    x = torch.randn(3, 8, 17, 19).to(dtype)
    weight = (torch.randn(8, 8, 3, 3) * 0.3).to(dtype)
    bias = torch.randn(8).to(dtype)
    mask = make_mask(3, 17, 19, 0.6)
    expected = dense_then_mask(x.double(), weight.double(), mask, bias.double(), 2, x.double(), True)
    out = x.clone()
    got = PackedConv(weight, bias, 2).run_into_(out, x, mask, relu=True)
    check(got, expected, dtype, f"NCHW dtype={dtype}")
    check(x, x.double(), dtype, "the NCHW input is left unchanged")


def test_usable_only_without_autograd_on_cpu() -> None:
    x = torch.randn(1, 4, 5, 5)
    assert usable(x)
    assert not usable(x.requires_grad_())
    with torch.no_grad():
        assert usable(x)
    assert not usable(torch.randn(1, 4, 5, 5, dtype=torch.complex64))
