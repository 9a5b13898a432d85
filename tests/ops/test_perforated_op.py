"""perforated_conv2d on every CPU backend against dense F.conv2d-then-mask and hand values.

The oracle (tests/support/perforated.py) is `torch.where(mask, act(F.conv2d(...)), fill or 0)`,
the definition of the op computed densely by PyTorch's own convolution. The "cpp" backend
compiles on first use, so its cases are marked slow.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pag_model.ops import BACKEND_ENV, perforated_conv2d, tap_major
from pag_model.ops import backends
from pag_model.ops.build import CompiledExtension
from tests.support.perforated import dense_then_mask, layout, make_mask

REPO = Path(__file__).resolve().parents[2]
CPU_BACKENDS = ["reference", pytest.param("cpp", marks=pytest.mark.slow)]
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.fixture
def backend(request, monkeypatch) -> str:
    monkeypatch.setenv(BACKEND_ENV, request.param)
    return request.param


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("density", [0.0, 0.01, 0.5, 1.0])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("dilation", [1, 2, 4, 10])
def test_matches_dense_then_mask(backend: str, dilation: int, k: int, density: float) -> None:
    channels, out_channels, height, width = 4, 5, 13, 11
    cases = itertools.product([1, 3], ["contiguous", "strided", "channels_last"],
                              [torch.float32, torch.float64], [False, True])
    for batch, kind, dtype, with_fill in cases:
        x = layout(torch.randn(batch, channels, height, width, dtype=dtype), kind)
        weight = torch.randn(out_channels, channels, k, k, dtype=dtype)
        mask = make_mask(batch, height, width, density)
        bias = torch.randn(out_channels, dtype=dtype) if with_fill else None
        fill = torch.randn(batch, out_channels, height, width, dtype=dtype) if with_fill else None
        relu = with_fill
        expected = dense_then_mask(x, weight, mask, bias, dilation, fill, relu)
        got = perforated_conv2d(x, weight, mask, bias=bias, dilation=dilation, fill=fill, relu=relu)
        assert got.shape == expected.shape
        msg = f"backend={backend} B={batch} layout={kind} dtype={dtype} fill={with_fill}"
        torch.testing.assert_close(got, expected, **TOL[dtype], msg=lambda m: f"{msg}: {m}")


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
def test_hand_computed_values(backend: str) -> None:
    # Input 1..9 in a 3x3 image, all-ones 3x3 kernel: the centre sums all nine values (45),
    # the top-left corner sees 1, 2, 4, 5 (12). Inactive pixels keep fill (-7).
    x = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    weight = torch.ones(1, 1, 3, 3)
    mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    mask[0, 1, 1] = mask[0, 0, 0] = True
    fill = torch.full((1, 1, 3, 3), -7.0)
    out = perforated_conv2d(x, weight, mask, bias=torch.tensor([0.5]), fill=fill)
    expected = torch.full((1, 1, 3, 3), -7.0)
    expected[0, 0, 1, 1] = 45.5
    expected[0, 0, 0, 0] = 12.5
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
def test_relu_and_memory_format(backend: str) -> None:
    x = torch.randn(2, 3, 6, 7).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(4, 3, 3, 3)
    bias = torch.randn(4)
    mask = make_mask(2, 6, 7, 0.5)
    out = perforated_conv2d(x, weight, mask, bias=bias, dilation=2, relu=True)
    torch.testing.assert_close(out, dense_then_mask(x, weight, mask, bias, 2, None, True))
    assert (out >= 0).all() and (out[~mask[:, None].expand_as(out)] == 0).all()
    if backend != "reference":
        assert out.is_contiguous(memory_format=torch.channels_last)
    # A precomputed tap-major weight (as the inference modules pass) gives the same result.
    rows = tap_major(weight)
    again = perforated_conv2d(x, weight, mask, bias=bias, dilation=2, relu=True, weight_rows=rows)
    torch.testing.assert_close(again, out, rtol=0, atol=0)
    with pytest.raises(ValueError, match="weight_rows must be tap_major"):
        perforated_conv2d(x, weight, mask, weight_rows=rows.t())


@pytest.mark.slow
@pytest.mark.parametrize("tile", ["1", "7", "1000"])
def test_cpp_tiling_does_not_change_results(monkeypatch, tile: str) -> None:
    """Many tiles, a ragged last tile, and one tile for everything give the same output."""
    monkeypatch.setenv(BACKEND_ENV, "cpp")
    monkeypatch.setenv("PAG_PERFORATED_TILE", tile)
    x = torch.randn(3, 6, 9, 10)
    weight, bias = torch.randn(5, 6, 3, 3), torch.randn(5)
    fill = torch.randn(3, 5, 9, 10)
    mask = make_mask(3, 9, 10, 0.6)
    out = perforated_conv2d(x, weight, mask, bias=bias, dilation=2, fill=fill, relu=True)
    torch.testing.assert_close(out, dense_then_mask(x, weight, mask, bias, 2, fill, True), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
def test_gradcheck_float64(backend: str) -> None:
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    fill = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    mask = make_mask(2, 5, 6, 0.5)

    def op(x, weight, bias, fill):
        return perforated_conv2d(x, weight, mask, bias=bias, dilation=2, fill=fill, relu=True)

    assert torch.autograd.gradcheck(op, (x, weight, bias, fill))
    # And the gradient equals the dense-then-mask definition's gradient.
    grad_out = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    got = torch.autograd.grad(op(x, weight, bias, fill), (x, weight), grad_out)
    ref = torch.autograd.grad(dense_then_mask(x, weight, mask, bias, 2, fill, True), (x, weight), grad_out)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


BAD = [
    ("input", dict(x=torch.randn(3, 5, 5)), "input must be (B, C, H, W)"),
    ("int input", dict(x=torch.ones(1, 2, 5, 5, dtype=torch.int64)), "floating point"),
    ("channels", dict(w=torch.randn(3, 4, 3, 3)), "expects 4 input channels"),
    ("even k", dict(w=torch.randn(3, 2, 2, 2)), "square, odd kernel"),
    ("mask dtype", dict(m=torch.ones(1, 5, 5)), "mask must be a bool tensor"),
    ("mask shape", dict(m=torch.ones(1, 5, 4, dtype=torch.bool)), "mask (1, 5, 4) must be (B, H, W)"),
    ("bias", dict(b=torch.randn(2)), "bias must be (Co,) = (3,)"),
    ("bias dtype", dict(b=torch.randn(3, dtype=torch.float64)), "bias is torch.float64"),
    ("dilation", dict(d=0), "dilation must be an int >= 1"),
    ("fill", dict(f=torch.randn(1, 2, 5, 5)), "fill must be (B, Co, H, W) = (1, 3, 5, 5)"),
]


@pytest.mark.parametrize("name,bad,message", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_raise_clearly(name: str, bad: dict, message: str) -> None:
    args = dict(x=torch.randn(1, 2, 5, 5), w=torch.randn(3, 2, 3, 3),
                m=torch.ones(1, 5, 5, dtype=torch.bool), b=None, d=1, f=None)
    args.update(bad)
    with pytest.raises((ValueError, TypeError)) as info:
        perforated_conv2d(args["x"], args["w"], args["m"], bias=args["b"], dilation=args["d"], fill=args["f"])
    assert message in str(info.value)


def test_forced_backend_errors(monkeypatch) -> None:
    x, w, m = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3), torch.ones(1, 5, 5, dtype=torch.bool)
    monkeypatch.setenv(BACKEND_ENV, "fast")
    with pytest.raises(ValueError, match="PAG_PERFORATED_BACKEND='fast'"):
        perforated_conv2d(x, w, m)
    monkeypatch.setenv(BACKEND_ENV, "cuda")
    with pytest.raises(RuntimeError, match="cuda backend runs on CUDA tensors"):
        perforated_conv2d(x, w, m)
    monkeypatch.setenv(BACKEND_ENV, "cpp")
    with pytest.raises(RuntimeError, match="cpp backend supports"):
        perforated_conv2d(x.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn), m)


def test_broken_build_is_reported_and_auto_falls_back(monkeypatch, tmp_path) -> None:
    broken = CompiledExtension("pag_perforated_broken", ["no_such_kernel.cpp"], cuda=False)
    monkeypatch.setattr(backends, "CPP", broken)
    monkeypatch.setenv(BACKEND_ENV, "cpp")
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    m = make_mask(1, 5, 5, 0.5)
    with pytest.raises(RuntimeError, match="no_such_kernel.cpp"):
        perforated_conv2d(x, w, m)
    monkeypatch.delenv(BACKEND_ENV)
    with pytest.warns(UserWarning, match="falling back to the reference backend"):
        out = perforated_conv2d(x, w, m)
    torch.testing.assert_close(out, dense_then_mask(x, w, m, None, 1, None, False))


def test_import_builds_nothing(tmp_path) -> None:
    code = ("import pag_model.ops as ops, pag_model.ops.backends as b; "
            "assert b.CPP._module is None and b.CUDA._module is None")
    env = dict(os.environ, PAG_EXTENSIONS_DIR=str(tmp_path / "ext"))
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, timeout=120)
    assert not (tmp_path / "ext").exists()


@pytest.mark.slow
def test_concurrent_builds_in_two_processes(tmp_path) -> None:
    """Two processes build the cpp kernel into one fresh cache at once; both get a working op."""
    code = (
        "import torch, torch.nn.functional as F; from pag_model.ops import backends, perforated_conv2d;"
        "backends.CPP.load(); x = torch.randn(1, 3, 6, 6); w = torch.randn(2, 3, 3, 3);"
        "m = torch.rand(1, 6, 6) < 0.5; out = perforated_conv2d(x, w, m);"
        "ref = torch.where(m[:, None], F.conv2d(x, w, padding=1), torch.zeros(()));"
        "assert torch.allclose(out, ref, atol=1e-5); print('ok')"
    )
    env = dict(os.environ, PAG_EXTENSIONS_DIR=str(tmp_path / "ext"), PAG_PERFORATED_BACKEND="cpp")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-2000:]
        assert out.strip().endswith("ok")
    assert list((tmp_path / "ext" / "pag_perforated_cpu").glob("*.so"))
