"""Cityscapes reader: leftImg8bit, gtFine labelIds/instanceIds, disparity and camera json.

labelIds map to the 19 training ids (everything else -> IGNORE); instanceIds are kept as
published (labelId * 1000 + k for instances) for iIoU; depth = baseline * fx / disparity
with disparity d = (p - 1) / 256 for 16-bit pixel p > 1 (p = 0 marks no measurement).
Sample ids are the file stems without the suffix, e.g. "aachen_000000_000019".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.datasets.errors import DatasetError
from pipelines.datasets.files import check_size, load_json, read_image
from pipelines.datasets.schema import IGNORE, Sample

SPLITS = ("train", "val", "test")
CLASSES_19 = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                  24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
MAX_LABEL_ID = 33


def disparity_to_depth(pixels: np.ndarray, baseline: float, fx: float) -> tuple[np.ndarray, np.ndarray]:
    """16-bit disparity PNG values -> (depth metres float32, valid bool)."""
    disparity = (pixels.astype(np.float64) - 1.0) / 256.0
    valid = pixels > 1
    depth = np.where(valid, baseline * fx / np.where(valid, disparity, 1.0), 0.0)
    return depth.astype(np.float32), valid


class CityscapesReader:
    """Reads Cityscapes as published.

    Args:
        root: directory holding leftImg8bit/, gtFine/, and (for depth) disparity/ and camera/.
        depth: read disparity and camera json into depth (False: semantic only).
    """

    name = "cityscapes"
    tasks = ("semantic", "depth")

    def __init__(
        self,
        root: str | Path,
        depth: bool = True,
    ) -> None:
        self.root = Path(root)
        if not (self.root / "leftImg8bit").is_dir():
            raise DatasetError(self.root, "not a Cityscapes tree: expected leftImg8bit/")
        self.depth = depth
        lut = np.full(256, IGNORE, np.uint8)
        for label_id, train_id in LABEL_TO_TRAIN.items():
            lut[label_id] = train_id
        self._lut = lut

    def splits(self) -> list[str]:
        return [s for s in SPLITS if (self.root / "leftImg8bit" / s).is_dir()]

    def class_names(self) -> list[str]:
        return list(CLASSES_19)

    def sample_ids(self, split: str) -> list[str]:
        folder = self.root / "leftImg8bit" / split
        if split not in SPLITS or not folder.is_dir():
            raise DatasetError(folder, f"no split {split!r}; this tree has {self.splits()}")
        suffix = "_leftImg8bit.png"
        return sorted(p.name[: -len(suffix)] for p in folder.glob(f"*/*{suffix}"))

    def _path(self, folder: str, split: str, sample_id: str, suffix: str) -> Path:
        city = sample_id.rsplit("_", 2)[0]
        return self.root / folder / split / city / f"{sample_id}_{suffix}"

    def read(self, split: str, sample_id: str) -> Sample:
        image_path = self._path("leftImg8bit", split, sample_id, "leftImg8bit.png")
        label_path = self._path("gtFine", split, sample_id, "gtFine_labelIds.png")
        instance_path = self._path("gtFine", split, sample_id, "gtFine_instanceIds.png")
        image = read_image(image_path, "RGB")
        size = image.shape[:2]
        label_ids = read_image(label_path, "L")
        check_size(label_path, label_ids, size, "labelIds")
        if label_ids.max() > MAX_LABEL_ID:
            raise DatasetError(label_path, f"labelId {int(label_ids.max())} out of range 0..{MAX_LABEL_ID}")
        instances = read_image(instance_path, "I")
        check_size(instance_path, instances, size, "instanceIds")
        sample = Sample(
            image=image,
            dataset=self.name,
            split=split,
            source=str(image_path),
            sample_id=sample_id,
            semantic=self._lut[label_ids],
            instances=instances.astype(np.int32),
        )
        if self.depth:
            sample.depth, sample.depth_valid = self._depth(split, sample_id, size)
        sample.check()
        return sample

    def _depth(self, split: str, sample_id: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        disparity_path = self._path("disparity", split, sample_id, "disparity.png")
        camera_path = self._path("camera", split, sample_id, "camera.json")
        pixels = read_image(disparity_path, "I")
        check_size(disparity_path, pixels, size, "disparity")
        camera = load_json(camera_path)
        try:
            baseline = float(camera["extrinsic"]["baseline"])
            fx = float(camera["intrinsic"]["fx"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(camera_path, f"expected numbers extrinsic.baseline and intrinsic.fx ({exc!r})") from exc
        if baseline <= 0 or fx <= 0:
            raise DatasetError(camera_path, f"baseline {baseline} and fx {fx} must be positive")
        return disparity_to_depth(pixels, baseline, fx)
