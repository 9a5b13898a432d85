"""`pag::perforated_conv2d` as a torch.library op: opcheck, the public function's use of it,
and torch.compile of a perforated PAGNet on CPU against the eager model.

torch.library.opcheck runs the op's schema, fake (meta) kernel, autograd registration and
AOT-dispatch checks against the real kernel on the sample inputs; the eager values are
checked against dense F.conv2d-then-mask in test_perforated_op.py.
"""
from __future__ import annotations

import pytest
import torch

from pag_model.ops import BACKEND_ENV, perforated_conv2d, tap_major
from pag_model.sparse import to_perforated
from tests.support.perforated import dense_then_mask, make_mask
from tests.ops.test_sparse_inference import fix_gates, relative_error, tiny_model

OP = torch.ops.pag.perforated_conv2d.default


def samples(dtype: torch.dtype, grad: bool) -> list[tuple]:
    """(input, weight, mask, bias, dilation, fill, relu, weight_rows) argument tuples."""
    opts = dict(dtype=dtype, requires_grad=grad)
    x = torch.randn(2, 3, 7, 6, **opts)
    x_cl = torch.randn(2, 3, 7, 6, dtype=dtype).contiguous(memory_format=torch.channels_last).requires_grad_(grad)
    weight = torch.randn(4, 3, 3, 3, **opts)
    bias = torch.randn(4, **opts)
    fill = torch.randn(2, 4, 7, 6, **opts)
    half = make_mask(2, 7, 6, 0.5)
    empty = make_mask(2, 7, 6, 0.0)
    rows = tap_major(weight)
    return [
        (x, weight, half, bias, 2, fill, True, None),
        (x_cl, weight, half, None, 1, None, False, rows),
        (x, weight, empty, bias, 4, fill, True, rows),
        (x, torch.randn(4, 3, 1, 1, **opts), half, None, 3, fill, False, None),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_reference_backend(monkeypatch, dtype: torch.dtype) -> None:
    monkeypatch.setenv(BACKEND_ENV, "reference")
    for grad in (False, True):
        for args in samples(dtype, grad):
            torch.library.opcheck(OP, args)


@pytest.mark.slow
def test_opcheck_cpp_backend(monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "cpp")
    for grad in (False, True):
        for args in samples(torch.float32, grad):
            torch.library.opcheck(OP, args)


def test_opcheck_triton_backend_interpreted(monkeypatch) -> None:
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv(BACKEND_ENV, "triton")
    for args in samples(torch.float32, True)[:2]:
        torch.library.opcheck(OP, args)


def test_fake_kernel_output_matches_real_metadata(monkeypatch) -> None:
    """Shape, dtype and strides of the fake kernel's output are those of the real one."""
    monkeypatch.setenv(BACKEND_ENV, "reference")
    from torch._subclasses.fake_tensor import FakeTensorMode

    for args in samples(torch.float32, False):
        real = OP(*args)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
            fake = OP(*fake_args)
        assert (fake.shape, fake.dtype, fake.stride()) == (real.shape, real.dtype, real.stride())


def test_public_function_dispatches_to_the_op(monkeypatch) -> None:
    """The public function goes through pag::perforated_conv2d (visible to a dispatch mode)."""
    monkeypatch.setenv(BACKEND_ENV, "reference")
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    x, w, m = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3), make_mask(1, 5, 5, 0.5)
    with Record():
        out = perforated_conv2d(x, w, m)
    assert "pag.perforated_conv2d.default" in seen
    torch.testing.assert_close(out, dense_then_mask(x, w, m, None, 1, None, False))


@pytest.mark.slow
def test_torch_compile_of_a_perforated_pagnet_matches_eager(monkeypatch) -> None:
    """Inductor on CPU compiles the perforated model around the opaque op; same output as eager."""
    monkeypatch.setenv(BACKEND_ENV, "reference")
    torch._dynamo.reset()
    model = tiny_model()
    images = torch.randn(2, 3, 64, 64)
    fix_gates(model, images, 0.5)
    to_perforated(model)
    with torch.no_grad():
        eager = model(images)["semantic"]
        compiled = torch.compile(model)
        got = compiled(images)["semantic"]
    assert relative_error(got, eager) < 1e-4
    torch._dynamo.reset()
