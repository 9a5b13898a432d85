"""NYUv2 labeled-set reader: the MATLAB v7.3 (HDF5) file, splits.mat and classMapping40.mat.

h5py sees MATLAB's axes reversed: `images` (N, 3, W, H) uint8, `depths` (N, W, H) float
metres (in-painted), `labels` (N, W, H) raw ids 1..894 with 0 = unlabeled. `splits.mat`
holds 1-based `trainNdxs` / `testNdxs`; `classMapping40.mat` maps raw id r >= 1 to
`mapClass[r - 1]` in 1..40 (Gupta et al. 2013), which becomes class id 0..39 (0 -> IGNORE).
Normals come from the depth map by Silberman's least-squares plane fit (`normals.py`).
Depth and normals are marked valid only inside the standard valid region (rows 44:471, cols
40:601 at 480 x 640, scaled for other sizes) because the Kinect frame border is filler.
Sample ids are the 1-based image indices, zero-padded to four digits ("0001").
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from pipelines.datasets.errors import DatasetError
from pipelines.datasets.files import load_mat, require_file
from pipelines.datasets.normals import normals_from_depth
from pipelines.datasets.scenes import NYU_CAMERA, scaled_intrinsics
from pipelines.datasets.schema import IGNORE, Sample

CLASSES_40 = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)
SPLIT_KEYS = {"train": "trainNdxs", "test": "testNdxs"}
VALID_REGION = (44, 471, 40, 601)  # rows, cols at 480 x 640 (Python slices)
MAT_NAME = "nyu_depth_v2_labeled.mat"


def valid_region_mask(size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the standard NYUv2 valid region scaled from 480 x 640 to `size`."""
    h, w = size
    r0, r1, c0, c1 = VALID_REGION
    mask = np.zeros((h, w), bool)
    mask[round(r0 * h / 480):round(r1 * h / 480), round(c0 * w / 640):round(c1 * w / 640)] = True
    return mask


class NYUv2Reader:
    """Reads the NYUv2 labeled set as published.

    Args:
        root: directory holding nyu_depth_v2_labeled.mat, splits.mat and classMapping40.mat.
        intrinsics: (fx, fy, cx, cy) for back-projection; default: the NYUv2 RGB camera,
            scaled to the stored image size.
        valid_region: restrict depth/normals validity to the standard valid region.
    """

    name = "nyuv2"
    tasks = ("semantic", "depth", "normals")

    def __init__(
        self,
        root: str | Path,
        intrinsics: tuple[float, float, float, float] | None = None,
        valid_region: bool = True,
    ) -> None:
        self.root = Path(root)
        self.mat_path = self.root / MAT_NAME
        self.intrinsics = intrinsics
        self.valid_region = valid_region
        self._split_ndx: dict[str, np.ndarray] | None = None
        self._map: np.ndarray | None = None

    def splits(self) -> list[str]:
        return list(SPLIT_KEYS)

    def class_names(self) -> list[str]:
        return list(CLASSES_40)

    def sample_ids(self, split: str) -> list[str]:
        """The split's frames; first checks the dataset-level files (splits.mat,
        classMapping40.mat, the v7.3 file's keys and frame counts), so a missing or wrong
        one fails here, before any frame is read, instead of once per frame."""
        if split not in SPLIT_KEYS:
            raise DatasetError(self.root / "splits.mat", f"no split {split!r}; expected one of {list(SPLIT_KEYS)}")
        indices = self._splits()[split]
        self._mapping()
        with self._open() as f:
            frames = f["images"].shape[0]
        bad = indices[(indices < 1) | (indices > frames)]
        if bad.size:
            raise DatasetError(
                self.root / "splits.mat",
                f"{SPLIT_KEYS[split]} holds index(es) {bad[:10].tolist()} outside 1..{frames}, "
                f"the frames of {MAT_NAME}",
            )
        return [f"{int(i):04d}" for i in indices]

    def read(self, split: str, sample_id: str) -> Sample:
        if not sample_id.isdigit():
            raise DatasetError(self.mat_path, f"sample id {sample_id!r} is not a 1-based image index like '0001'")
        index = int(sample_id) - 1
        image, depth, raw = self._load(index)
        semantic = self._map_labels(raw, sample_id)
        valid = depth > 0
        if self.valid_region:
            valid &= valid_region_mask(depth.shape)
        intrinsics = self.intrinsics or scaled_intrinsics(NYU_CAMERA, depth.shape)
        normals, normals_valid = normals_from_depth(depth, intrinsics)
        normals_valid &= valid
        normals[~normals_valid] = 0
        sample = Sample(
            image=image,
            dataset=self.name,
            split=split,
            source=f"{self.mat_path}#{sample_id}",
            sample_id=sample_id,
            semantic=semantic,
            depth=np.where(valid, depth, 0).astype(np.float32),
            depth_valid=valid,
            normals=normals,
            normals_valid=normals_valid,
        )
        sample.check()
        return sample

    def _splits(self) -> dict[str, np.ndarray]:
        if self._split_ndx is None:
            mat = load_mat(self.root / "splits.mat", tuple(SPLIT_KEYS.values()))
            self._split_ndx = {s: np.asarray(mat[k]).ravel().astype(np.int64) for s, k in SPLIT_KEYS.items()}
        return self._split_ndx

    def _mapping(self) -> np.ndarray:
        if self._map is None:
            path = self.root / "classMapping40.mat"
            table = np.asarray(load_mat(path, ("mapClass",))["mapClass"]).ravel().astype(np.int64)
            if table.size and (table.min() < 0 or table.max() > len(CLASSES_40)):
                raise DatasetError(path, f"mapClass values {table.min()}..{table.max()}, expected 0..{len(CLASSES_40)}")
            self._map = table
        return self._map

    def _open(self) -> h5py.File:
        """The v7.3 file, open, with its keys, shapes and frame counts checked."""
        require_file(self.mat_path)
        try:
            f = h5py.File(self.mat_path, "r")
        except OSError as exc:
            raise DatasetError(self.mat_path, f"not a MATLAB v7.3 (HDF5) file ({exc})") from exc
        try:
            missing = [k for k in ("images", "depths", "labels") if k not in f]
            if missing:
                raise DatasetError(self.mat_path, f"missing key(s) {missing}; file has {sorted(f.keys())}")
            images = f["images"]
            if images.ndim != 4 or images.shape[1] != 3:
                raise DatasetError(self.mat_path, f"images has shape {images.shape}, expected (N, 3, W, H)")
            counts = {k: f[k].shape[0] for k in ("images", "depths", "labels")}
            if len(set(counts.values())) != 1:
                raise DatasetError(self.mat_path, f"images, depths and labels hold different numbers of frames: {counts}")
        except BaseException:
            f.close()
            raise
        return f

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8, depth (H, W) float32, raw labels (H, W) int64 of one index."""
        frame = f"frame {index + 1:04d}"
        with self._open() as f:
            images = f["images"]
            if not 0 <= index < images.shape[0]:
                raise DatasetError(self.mat_path, f"image index {index + 1} out of range 1..{images.shape[0]}")
            arrays = {}
            for key in ("images", "depths", "labels"):
                try:
                    arrays[key] = f[key][index]
                except (OSError, ValueError, RuntimeError) as exc:  # e.g. a corrupt deflate chunk
                    raise DatasetError(
                        self.mat_path, f"{frame}: cannot read {key}[{index + 1}] ({exc}); the file is damaged"
                    ) from exc
        image = np.ascontiguousarray(arrays["images"].transpose(2, 1, 0))
        depth = np.ascontiguousarray(arrays["depths"].T).astype(np.float32)
        raw = np.ascontiguousarray(arrays["labels"].T).astype(np.int64)
        for key, array in (("depths", depth), ("labels", raw)):
            if array.shape != image.shape[:2]:
                raise DatasetError(self.mat_path, f"{key}[{index + 1}] is {array.shape} (H, W), image is {image.shape[:2]}")
        return image, depth, raw

    def _map_labels(self, raw: np.ndarray, sample_id: str) -> np.ndarray:
        table = self._mapping()
        bad = np.unique(raw[(raw < 0) | (raw > table.size)])
        if bad.size:
            raise DatasetError(
                self.mat_path,
                f"frame {sample_id}: label {int(bad[0])} out of range 0..{table.size} "
                f"(raw ids 1..{table.size}, 0 = unlabeled; all bad values: {bad[:10].tolist()})",
            )
        lut = np.full(table.size + 1, IGNORE, np.uint8)
        lut[1:] = np.where(table > 0, table - 1, IGNORE)
        return lut[raw]
