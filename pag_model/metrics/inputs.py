"""Input checks shared by the metric accumulators.

Every meter accepts torch tensors or numpy arrays. These helpers convert them once and
raise errors that name the argument, the shape or value found and what was expected.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray]


def to_tensor(value: Any, name: str, device: Optional[torch.device] = None) -> torch.Tensor:
    """Return `value` as a tensor (on `device` when given), or raise naming `name`."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    elif isinstance(value, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    else:
        raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(value).__name__}")
    if device is not None:
        tensor = tensor.to(device)
    return tensor


def to_numpy(value: Any, name: str) -> np.ndarray:
    """Return `value` as a numpy array on the host, or raise naming `name`."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def check_ndim(tensor: ArrayLike, ndim: int, name: str, layout: str) -> None:
    """Raise unless `tensor` has `ndim` dimensions; `layout` reads like "(B, H, W)"."""
    if tensor.ndim != ndim:
        raise ValueError(f"{name}: expected shape {layout}, got {tuple(tensor.shape)}")


def check_same_shape(a: ArrayLike, b: ArrayLike, name_a: str, name_b: str) -> None:
    """Raise unless `a` and `b` have the same shape."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"shape mismatch: {name_a} has shape {tuple(a.shape)} but {name_b} has {tuple(b.shape)}"
        )


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise if a floating tensor holds NaN or infinity."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name}: {bad} value(s) are NaN or infinite; expected finite numbers")


def check_integer(tensor: torch.Tensor, name: str) -> None:
    """Raise unless `tensor` holds integer labels."""
    if tensor.is_floating_point() or tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name}: expected integer labels, got dtype {tensor.dtype}")


def check_keys(state: dict, keys: Sequence[str], owner: str) -> None:
    """Raise unless the state dict `state` carries every key in `keys`."""
    missing = [key for key in keys if key not in state]
    if missing:
        raise KeyError(f"{owner}.from_state: missing key(s) {missing}; got {sorted(state)}")
