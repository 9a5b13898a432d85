"""Which backend runs a perforated convolution: the best available, or the one forced by env.

Backends, best first: "cuda" (CUDA tensors, compiled extension), "cpp" (CPU float32/float64,
compiled extension), "reference" (pure PyTorch, always there). Set
PAG_PERFORATED_BACKEND=reference|cpp|cuda to force one; a forced backend that cannot run the
given input raises a RuntimeError saying why. Importing this module builds nothing: a
compiled backend is built the first time it is asked for (see `build.py`).
"""
from __future__ import annotations

import os
import warnings

import torch

from pag_model.ops.build import CompiledExtension

BACKEND_ENV = "PAG_PERFORATED_BACKEND"
BACKENDS = ("reference", "cpp", "cuda")

CPP = CompiledExtension("pag_perforated_cpu", ["perforated_cpu.cpp"], cuda=False)
CUDA = CompiledExtension("pag_perforated_cuda", ["perforated_cuda.cpp", "perforated_cuda.cu"], cuda=True)

CPP_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
CUDA_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

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
    raise ValueError(f"unknown perforated backend {name!r}; expected one of {BACKENDS}")


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
    for name in ("cuda", "cpp"):
        if input.device.type != ("cuda" if name == "cuda" else "cpu"):
            continue
        why = problem(name, input)
        if not why:
            return name
        # A failed build is worth one warning; a device or dtype mismatch is not.
        extension = CUDA if name == "cuda" else CPP
        if extension.reason() and name not in _warned:
            _warned.add(name)
            warnings.warn(f"perforated_conv2d: falling back to the reference backend: {why}")
    return "reference"


def available_backends(device: str | torch.device = "cpu") -> list[str]:
    """Backends that run float32 tensors on `device` here (builds extensions if needed)."""
    probe = torch.empty(0, device=device)
    return [name for name in BACKENDS if not problem(name, probe)]
