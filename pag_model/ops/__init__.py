"""Perforated convolution: a pure-PyTorch reference, a C++ CPU kernel, a CUDA kernel and a
fused implicit-GEMM Triton kernel, behind one torch.library op, `pag::perforated_conv2d`.

Public names:
    perforated_conv2d(input, weight, mask, bias=None, dilation=1, fill=None, relu=False,
                      weight_rows=None)
    tap_major(weight)  the (Co, k*k*C) weight matrix the compiled kernels use (weight_rows)
    perforated_conv2d_reference(...)  same arguments, always the pure-PyTorch path
    available_backends(device="cpu"), choose_backend(input), BACKEND_ENV
Importing defines the op `torch.ops.pag.perforated_conv2d` (library.py) and builds nothing;
compiled kernels are built, and triton imported, on first use (see `build.py`, `backends.py`).
"""
from pag_model.ops.backends import BACKEND_ENV, BACKENDS, available_backends, choose_backend
from pag_model.ops.build import ExtensionUnavailable
from pag_model.ops.perforated import perforated_conv2d, tap_major
from pag_model.ops import library  # noqa: F401  (defines pag::perforated_conv2d)
from pag_model.ops.reference import perforated_conv2d_reference

__all__ = [
    "BACKEND_ENV",
    "BACKENDS",
    "ExtensionUnavailable",
    "available_backends",
    "choose_backend",
    "perforated_conv2d",
    "perforated_conv2d_reference",
    "tap_major",
]
