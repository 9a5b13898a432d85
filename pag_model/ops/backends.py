"""Which backend runs a perforated convolution: the best available, or the one forced by env.

Backends, best first:
    CUDA tensors: "triton" (fused implicit GEMM, `triton_conv.py`; fp16/bf16/fp32), "cuda"
        (compiled extension: gather -> cuBLAS -> scatter), "reference".
    CPU tensors: "cpp" (compiled extension, float32/float64), "reference" (pure PyTorch).
Set PAG_PERFORATED_BACKEND=reference|cpp|cuda|triton to force one; a forced backend that
cannot run the given input raises a RuntimeError saying why. The forced "triton" backend also
takes CPU tensors when TRITON_INTERPRET=1 (Triton's interpreter; slow, for tests). Importing
this module builds nothing and does not import `triton_conv` (nor triton itself): a compiled
backend is built, and the Triton kernels imported, the first time one is asked for (see
`build.py`).
"""
from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType
from typing import Optional

import torch

from pag_model.ops.build import CompiledExtension

BACKEND_ENV = "PAG_PERFORATED_BACKEND"
BACKENDS = ("reference", "cpp", "cuda", "triton")

CPP = CompiledExtension("pag_perforated_cpu", ["perforated_cpu.cpp"], cuda=False)
CUDA = CompiledExtension("pag_perforated_cuda", ["perforated_cuda.cpp", "perforated_cuda.cu"], cuda=True)

CPP_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
CUDA_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INTERPRET_ENV = "TRITON_INTERPRET"

_triton: Optional[ModuleType] = None
_triton_error = ""

_warned: set[str] = set()


def problem(name: str, input: torch.Tensor) -> str:
    """Why backend `name` cannot run on `input` ('' when it can). May build the extension."""
    if name == "reference":
        return ""
    if name == "cpp":
        if input.device.type != "cpu":
            return f"the cpp backend runs on CPU tensors and input is on {input.device}"
        if input.dtype not in CPP_DTYPES:
            return f"the cpp backend supports {CPP_DTYPES}, input is {input.dtype}"
        return "" if CPP.available() else CPP.reason()
    if name == "cuda":
        if input.device.type != "cuda":
            return f"the cuda backend runs on CUDA tensors and input is on {input.device}"
        if input.dtype not in CUDA_DTYPES:
            return f"the cuda backend supports {CUDA_DTYPES}, input is {input.dtype}"
        return "" if CUDA.available() else CUDA.reason()
    if name == "triton":
        return _triton_problem(input)
    raise ValueError(f"unknown perforated backend {name!r}; expected one of {BACKENDS}")


def interpret_requested() -> bool:
    """True when TRITON_INTERPRET asks for Triton's interpreter (as triton parses it)."""
    return os.environ.get(INTERPRET_ENV, "0").strip().lower() in ("1", "true", "on", "yes")


def triton_kernels() -> ModuleType:
    """`pag_model.ops.triton_conv`, imported on first use; ImportError says why it cannot be."""
    global _triton, _triton_error
    if _triton is None and not _triton_error:
        try:
            _triton = importlib.import_module("pag_model.ops.triton_conv")
        except Exception as exc:  # triton missing or broken
            _triton_error = f"importing triton failed: {exc}"
    if _triton is None:
        raise ImportError(_triton_error)
    return _triton


def _triton_problem(input: torch.Tensor) -> str:
    if input.device.type == "cpu":
        if not interpret_requested():
            return (f"the triton backend runs on CUDA tensors (or on CPU tensors with {INTERPRET_ENV}=1) "
                    f"and input is on {input.device}")
    elif input.device.type != "cuda":
        return f"the triton backend runs on CUDA tensors and input is on {input.device}"
    if input.dtype not in TRITON_DTYPES:
        return f"the triton backend supports {TRITON_DTYPES}, input is {input.dtype}"
    if input.device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(input.device)
        if major < 8:
            return f"the triton backend needs compute capability >= 8.0, {input.device} has {major}.x"
    try:
        triton_kernels()
    except ImportError as exc:
        return str(exc)
    return ""


def forced_backend() -> str:
    """The backend named by PAG_PERFORATED_BACKEND, '' when unset; ValueError when unknown."""
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced and forced not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={forced!r}: expected one of {', '.join(BACKENDS)}")
    return forced


def choose_backend(input: torch.Tensor) -> str:
    """The backend for `input`: the forced one if set (RuntimeError if unusable), else the best."""
    forced = forced_backend()
    if forced:
        why = problem(forced, input)
        if why:
            raise RuntimeError(f"{BACKEND_ENV}={forced} forces an unavailable backend: {why}")
        return forced
    order = ("triton", "cuda") if input.device.type == "cuda" else ("cpp",) if input.device.type == "cpu" else ()
    for i, name in enumerate(order):
        why = problem(name, input)
        if not why:
            return name
        # A failed build or import is worth one warning; a device, dtype or GPU mismatch is not.
        failed = _triton_error if name == "triton" else (CUDA if name == "cuda" else CPP).reason()
        if failed and name not in _warned:
            _warned.add(name)
            then = order[i + 1] if i + 1 < len(order) else "reference"
            warnings.warn(f"perforated_conv2d: {name} backend unavailable, falling back to the {then} backend: {why}")
    return "reference"


def available_backends(device: str | torch.device = "cpu") -> list[str]:
    """Backends that run float32 tensors on `device` here (builds extensions if needed)."""
    probe = torch.empty(0, device=device)
    return [name for name in BACKENDS if not problem(name, probe)]
