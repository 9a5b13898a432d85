"""The common sample schema every dataset reader yields.

One `Sample` per image. A reader fills `image` and whichever targets its dataset has and
leaves the others `None`. Arrays are numpy, height-major:

- image                (H, W, 3) uint8 RGB
- semantic             (H, W) uint8 class ids 0..K-1, IGNORE (255) where unlabeled
- depth                (H, W) float32 metres (0 where invalid)
- depth_valid          (H, W) bool
- normals              (H, W, 3) float32 unit vectors, camera frame x right, y down, z forward
                       (2D-3D-S: the local frame of the paper's appendix)
- normals_valid        (H, W) bool
- boundary             (H, W) uint8 training label: 0 negative, 1 positive, IGNORE in between
- boundary_annotators  (K, H, W) uint8 0/1, one map per human annotator (evaluation)
- instances            (H, W) int32 Cityscapes instanceIds (labelId*1000+k for instances)
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import numpy as np

IGNORE = 255
SCHEMA_VERSION = 1
TARGET_FIELDS = (
    "semantic",
    "depth",
    "depth_valid",
    "normals",
    "normals_valid",
    "boundary",
    "boundary_annotators",
    "instances",
)


@dataclass
class Sample:
    """One image and its targets. See the module docstring for shapes and dtypes."""

    image: np.ndarray
    dataset: str
    split: str
    source: str
    sample_id: str
    semantic: Optional[np.ndarray] = None
    depth: Optional[np.ndarray] = None
    depth_valid: Optional[np.ndarray] = None
    normals: Optional[np.ndarray] = None
    normals_valid: Optional[np.ndarray] = None
    boundary: Optional[np.ndarray] = None
    boundary_annotators: Optional[np.ndarray] = None
    instances: Optional[np.ndarray] = None

    def targets(self) -> dict[str, np.ndarray]:
        """The targets this sample carries, by field name."""
        return {f: getattr(self, f) for f in TARGET_FIELDS if getattr(self, f) is not None}

    def check(self) -> None:
        """Raise ValueError naming the source file if shapes or dtypes break the schema."""
        h, w = self.image.shape[:2]
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(
                f"{self.source}: image must be (H, W, 3) uint8, got {self.image.shape} {self.image.dtype}"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in TARGET_FIELDS and value is not None:
                spatial = value.shape[1:3] if f.name == "boundary_annotators" else value.shape[:2]
                if tuple(spatial) != (h, w):
                    raise ValueError(
                        f"{self.source}: {f.name} has spatial size {tuple(spatial)}, image is {(h, w)}"
                    )


# Keys and layouts of the torch batches the Ray Data pipeline yields to the training loop.
# image (B, 3, H, W) float32 normalised with IMAGENET_MEAN/STD; semantic (B, H, W) int64 with
# IGNORE; depth (B, H, W) float32 metres + depth_valid (B, H, W) bool; normals (B, 3, H, W)
# float32 + normals_valid (B, H, W) bool; boundary (B, H, W) int64 0/1/IGNORE.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
