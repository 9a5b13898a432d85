"""Small file helpers shared by the readers and the format writers.

Readers: open PNG/JPEG images, MATLAB v5 .mat files and JSON, turning every failure into a
`DatasetError` that names the file. Writers: `atomic_path` gives a temporary name that is
renamed onto the final one only when the file is complete.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image

from pipelines.atomic import atomic_path
from pipelines.datasets.errors import DatasetError

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")  # PIL's modes for 16-bit grey PNGs


def require_file(path: Path) -> Path:
    """Return `path` if it is an existing file, else raise DatasetError."""
    if not path.is_file():
        raise DatasetError(path, "file not found")
    return path


def read_image(path: Path, mode: str) -> np.ndarray:
    """Decode an image file fully and convert it to PIL `mode` ("RGB", "L" or "I").

    Returns:
        (H, W, 3) uint8 for "RGB"; (H, W) uint8 for "L"; (H, W) int32 for "I", which
        requires a 16-bit single-channel file (depth, disparity, instance ids): an 8-bit one
        is refused, since its values would be misread, not just rounded.
    """
    require_file(path)
    try:
        with Image.open(path) as img:
            img.load()
            if mode == "RGB":
                if img.mode != "RGB":
                    img = img.convert("RGB")
                return np.asarray(img, dtype=np.uint8)
            if mode == "L":
                if img.mode not in ("L", "P"):
                    raise DatasetError(path, f"expected an 8-bit single-channel PNG, got mode {img.mode}")
                return np.asarray(img, dtype=np.uint8)
            if mode == "I":
                if img.mode not in SIXTEEN_BIT_MODES:
                    bits = " (8 bits per pixel: values above 255 and their meaning are lost)" if img.mode in ("L", "P", "1") else ""
                    raise DatasetError(path, f"expected a 16-bit single-channel PNG, got mode {img.mode}{bits}")
                return np.asarray(img).astype(np.int32)
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(path, f"cannot decode image ({exc})") from exc
    raise ValueError(f"read_image: unknown mode {mode!r}, expected RGB, L or I")


def load_mat(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """Load a MATLAB v5 file and check it holds every key in `keys`."""
    require_file(path)
    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError...
        raise DatasetError(path, f"cannot read MATLAB v5 file ({type(exc).__name__}: {exc})") from exc
    missing = [k for k in keys if k not in mat]
    if missing:
        present = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(path, f"missing key(s) {missing}; file has {present}")
    return mat


def load_json(path: Path) -> Any:
    """Parse a JSON file."""
    require_file(path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(path, f"invalid JSON ({exc})") from exc


def check_size(path: Path, array: np.ndarray, size: tuple[int, int], what: str) -> None:
    """Raise DatasetError unless `array` is spatially `size` (H, W)."""
    if tuple(array.shape[:2]) != tuple(size):
        raise DatasetError(path, f"{what} is {tuple(array.shape[:2])}, expected {tuple(size)} like the image")


def write_png(path: Path, array: np.ndarray) -> None:
    """Write (H, W, 3) uint8, (H, W) uint8 or (H, W) uint16 as PNG, atomically."""
    if array.dtype == np.uint16:
        img = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint16))
    else:
        img = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def write_jpeg(path: Path, array: np.ndarray, quality: int = 95) -> None:
    """Write (H, W, 3) uint8 as JPEG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="JPEG", quality=quality)


def write_mat(path: Path, data: dict[str, Any]) -> None:
    """Write a MATLAB v5 file, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            scipy.io.savemat(fh, data, format="5", do_compression=True)


