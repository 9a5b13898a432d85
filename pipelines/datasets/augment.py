"""Training augmentation of the paper (Section 4): random left-right flips and random crops
"with 20-pixel margin and of size divisible by 8".

Works on one decoded sample: a dict of numpy arrays keyed by schema field names, image
(H, W, 3), label maps and masks (H, W), normals (H, W, 3), boundary_annotators (K, H, W).
Other keys (sample_id, ...) pass through untouched.

- Flip: every spatial array is mirrored left-right and the x component of the normals is
  negated (x points right in the camera frame and in 2D-3D-S's local frame alike).
- Crop: a window of the caller's size (each side a multiple of 8, e.g. 704x704 for
  2D-3D-S, 800x800 for Cityscapes) whose top-left corner is drawn uniformly so that the
  window stays inside the image grown by a 20-pixel margin on every side. Where the window
  overhangs the image it is padded: the image with the ImageNet mean colour (zero after
  normalisation), labels with IGNORE, validity masks with False, depth and normals with 0.
  This is what lets a 704-row crop move over a 704-row 2D-3D-S image.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from pipelines.datasets.schema import IGNORE, IMAGENET_MEAN

MARGIN = 20
MULTIPLE = 8
PAD_VALUES: dict[str, Any] = {
    "image": tuple(round(255 * m) for m in IMAGENET_MEAN),
    "semantic": IGNORE,
    "boundary": IGNORE,
    "depth": 0.0,
    "depth_valid": False,
    "normals": 0.0,
    "normals_valid": False,
    "boundary_annotators": 0,
    "instances": 0,
}


def _spatial_axis(key: str) -> int:
    """Axis of the image rows: 1 for (K, H, W) annotator stacks, else 0."""
    return 1 if key == "boundary_annotators" else 0


def _arrays(sample: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: v for k, v in sample.items() if k in PAD_VALUES and isinstance(v, np.ndarray)}


def _mirrored_views(sample: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Every spatial array mirrored left-right, as views (normals not yet negated)."""
    return {k: np.flip(v, axis=_spatial_axis(k) + 1) for k, v in _arrays(sample).items()}


def hflip(sample: Mapping[str, Any]) -> dict[str, Any]:
    """`sample` mirrored left-right, with normal x negated."""
    out = dict(sample)
    for key, value in _arrays(sample).items():
        out[key] = np.flip(value, axis=_spatial_axis(key) + 1).copy()
    if "normals" in out:
        out["normals"][..., 0] *= -1
    return out


def check_crop(crop: tuple[int, int]) -> tuple[int, int]:
    """`crop` as (h, w) ints; ValueError unless both are positive multiples of 8."""
    h, w = (int(c) for c in crop)
    if h <= 0 or w <= 0 or h % MULTIPLE or w % MULTIPLE:
        raise ValueError(f"crop size {tuple(crop)} must be positive multiples of {MULTIPLE}")
    return h, w


def crop_window(
    image_size: tuple[int, int],
    crop: tuple[int, int],
    rng: np.random.Generator,
    margin: int = MARGIN,
) -> tuple[int, int]:
    """A random top-left corner (top, left), possibly negative, of a `crop` window.

    The window lies inside the image grown by `margin` pixels on each side:
    -margin <= top and top + h <= H + margin (same for columns).
    """
    h, w = check_crop(crop)
    height, width = image_size
    if h > height + 2 * margin or w > width + 2 * margin:
        raise ValueError(
            f"crop {(h, w)} does not fit image {(height, width)} with a {margin}-pixel margin; "
            f"the largest crop is {(height + 2 * margin, width + 2 * margin)} rounded down to "
            f"multiples of {MULTIPLE}"
        )
    top = int(rng.integers(-margin, height - h + margin + 1))
    left = int(rng.integers(-margin, width - w + margin + 1))
    return top, left


def _crop_array(
    value: np.ndarray,
    axis: int,
    window: tuple[int, int, int, int],
    pad: Any,
) -> np.ndarray:
    """The window (top, left, h, w) of `value` (spatial axes axis, axis+1), padded."""
    top, left, h, w = window
    height, width = value.shape[axis], value.shape[axis + 1]
    shape = list(value.shape)
    shape[axis], shape[axis + 1] = h, w
    out = np.empty(shape, dtype=value.dtype)
    out[...] = np.asarray(pad, dtype=value.dtype)
    r0, r1 = max(top, 0), min(top + h, height)
    c0, c1 = max(left, 0), min(left + w, width)
    if r0 < r1 and c0 < c1:
        src = [slice(None)] * value.ndim
        dst = [slice(None)] * value.ndim
        src[axis], src[axis + 1] = slice(r0, r1), slice(c0, c1)
        dst[axis], dst[axis + 1] = slice(r0 - top, r1 - top), slice(c0 - left, c1 - left)
        out[tuple(dst)] = value[tuple(src)]
    return out


def crop(sample: Mapping[str, Any], top: int, left: int, size: tuple[int, int]) -> dict[str, Any]:
    """The (h, w) window of every spatial array at (top, left), padded where it overhangs."""
    h, w = size
    out = dict(sample)
    for key, value in _arrays(sample).items():
        out[key] = _crop_array(value, _spatial_axis(key), (top, left, h, w), PAD_VALUES[key])
    return out


def random_flip_crop(
    sample: Mapping[str, Any],
    crop_size: tuple[int, int],
    rng: np.random.Generator,
    margin: int = MARGIN,
    flip_probability: float = 0.5,
) -> dict[str, Any]:
    """Flip with probability `flip_probability`, then take a random `crop_size` window.

    Args:
        sample: decoded arrays by field name; must hold "image" (H, W, 3).
        crop_size: (h, w), multiples of 8.
        rng: the random generator to draw from.
        margin: how far (pixels) the window may overhang each image border.
        flip_probability: chance of a left-right flip.
    """
    size = check_crop(crop_size)
    flip = rng.random() < flip_probability
    # The flip is a view here; the crop makes the one copy (hflip + crop copied twice).
    source = {**sample, **_mirrored_views(sample)} if flip else sample
    top, left = crop_window(sample["image"].shape[:2], size, rng, margin)
    out = crop(source, top, left, size)
    if flip and "normals" in out:
        out["normals"][..., 0] *= -1  # a fresh array: crop copied it
    return out
