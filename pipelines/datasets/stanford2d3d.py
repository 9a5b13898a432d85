"""Stanford-2D-3D-Semantics panorama reader, with the paper's preprocessing and local normals.

Layout: `area_*/pano/{rgb,depth,normal,semantic}/camera_<uuid>_<room>_<i>_frame_
equirectangular_domain_{rgb,depth,normals,semantic}.png` and `assets/semantic_labels.json`.
Decoding: depth = value / 512 metres (65535 missing, distance from the camera centre);
normals = (v - 127.5) / 127.5 in the global frame (128,128,128 missing); semantic index
R * 65536 + G * 256 + B into the labels list, whose entries `class_instance_room_num_area`
name one of 13 classes (anything else, or an index past the list, -> IGNORE).
Preprocessing (paper Section 4): rescale by 0.5 and keep rows 160..863 (for other sizes the
same fractions of the height). Normals are turned into the appendix's local frame with a
per-panorama reference angle: from a CSV (`sample_id,theta0`, radians) when given, else
estimated from the nearest wall. Split: validation = areas 3 and 4, training = the rest.
Sample ids are "<area>/<file stem without the _rgb suffix>".
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipelines.datasets.errors import DatasetError
from pipelines.datasets.files import check_size, load_json, read_image, require_file
from pipelines.datasets.normals import estimate_reference_angle, global_to_local
from pipelines.datasets.schema import IGNORE, Sample

CLASSES_13 = ("beam", "board", "bookcase", "ceiling", "chair", "clutter", "column", "door",
              "floor", "sofa", "table", "wall", "window")
AREAS = ("area_1", "area_2", "area_3", "area_4", "area_5a", "area_5b", "area_6")
DEPTH_MISSING = 65535
KEEP_ROWS = (160 / 1024, 864 / 1024)  # rows 160..863 of the 1024-row rescaled panorama
LAYOUT = "holding area_1 ... area_6/pano/{rgb,depth,normal,semantic}/ and assets/semantic_labels.json"


def load_reference_angles(path: Path) -> dict[str, float]:
    """Read a CSV with columns sample_id and theta0 (radians) into a dict."""
    require_file(path)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"sample_id", "theta0"} <= set(rows[0]):
        raise DatasetError(path, f"columns {sorted(rows[0])}, expected sample_id and theta0")
    try:
        return {row["sample_id"]: float(row["theta0"]) for row in rows}
    except ValueError as exc:
        raise DatasetError(path, f"theta0 must be a number in radians ({exc})") from exc


class Stanford2D3DReader:
    """Reads Stanford-2D-3D-Semantics panoramas as published.

    Args:
        root: directory holding area_*/ and assets/semantic_labels.json.
        val_areas: areas forming the "val" split; every other area is "train".
        rescale: 1 / integer downscaling (0.5 in the paper); 1 keeps full resolution.
        keep_rows: (first, end) row fractions of the rescaled height to keep.
        reference_angles: optional CSV of per-panorama theta0 (columns sample_id, theta0).
    """

    name = "stanford2d3d"
    tasks = ("semantic", "depth", "normals")

    def __init__(
        self,
        root: str | Path,
        val_areas: tuple[str, ...] = ("area_3", "area_4"),
        rescale: float = 0.5,
        keep_rows: tuple[float, float] = KEEP_ROWS,
        reference_angles: str | Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.val_areas = tuple(val_areas)
        self.stride = round(1 / rescale)
        if rescale <= 0 or abs(1 / rescale - self.stride) > 1e-6:
            raise ValueError(f"rescale={rescale}: expected 1/n for an integer n (0.5 in the paper)")
        self.keep_rows = keep_rows
        self.angles = load_reference_angles(Path(reference_angles)) if reference_angles else None
        self._lut: np.ndarray | None = None
        if not self.root.is_dir():
            raise DatasetError(self.root, f"directory not found; expected the Stanford-2D-3D-Semantics root {LAYOUT}")
        if not self._areas():
            found = sorted(p.name for p in self.root.iterdir())[:10]
            raise DatasetError(self.root, f"not a Stanford-2D-3D-Semantics tree: no area_*/pano/rgb/ folder (found {found}); expected a root {LAYOUT}")

    def _areas(self) -> list[str]:
        """The area folders under the root that hold panoramas (area_*/pano/rgb/)."""
        return sorted(p.name for p in self.root.glob("area_*") if (p / "pano" / "rgb").is_dir())

    def splits(self) -> list[str]:
        return ["train", "val"]

    def class_names(self) -> list[str]:
        return list(CLASSES_13)

    def sample_ids(self, split: str) -> list[str]:
        """The split's panoramas; first checks assets/semantic_labels.json and that the split's
        areas are there, so a missing one fails before any panorama is read."""
        if split not in ("train", "val"):
            raise DatasetError(self.root, f"no split {split!r}; expected 'train' or 'val'")
        self._labels()
        present = self._areas()
        areas = [a for a in present if (a in self.val_areas) == (split == "val")]
        if not areas:
            expected = [a for a in AREAS if (a in self.val_areas) == (split == "val")]
            raise DatasetError(
                self.root,
                f"split {split!r} needs area(s) {expected} but none is under the root (found {present}); "
                f"convert only the splits you have (--splits)",
            )
        ids = []
        for area in areas:
            for p in sorted((self.root / area / "pano" / "rgb").glob("*_rgb.png")):
                ids.append(f"{area}/{p.name[: -len('_rgb.png')]}")
        return ids

    def _labels(self) -> np.ndarray:
        """Lookup table: semantic_labels.json index -> class id (IGNORE if not one of 13)."""
        if self._lut is None:
            path = self.root / "assets" / "semantic_labels.json"
            labels = load_json(path)
            if not isinstance(labels, list) or not all(isinstance(s, str) for s in labels):
                raise DatasetError(path, "expected a JSON list of strings 'class_instance_room_num_area'")
            index = {c: i for i, c in enumerate(CLASSES_13)}
            self._lut = np.array([index.get(s.split("_", 1)[0], IGNORE) for s in labels], np.uint8)
        return self._lut

    def read(self, split: str, sample_id: str) -> Sample:
        if sample_id.count("/") != 1:
            raise DatasetError(self.root, f"sample id {sample_id!r} is not '<area>/<file stem>'")
        area, stem = sample_id.split("/")
        pano = self.root / area / "pano"
        paths = {k: pano / folder / f"{stem}_{k}.png" for k, folder in
                 (("rgb", "rgb"), ("depth", "depth"), ("normals", "normal"), ("semantic", "semantic"))}
        image = read_image(paths["rgb"], "RGB")
        size = image.shape[:2]
        raw_depth = read_image(paths["depth"], "I")
        check_size(paths["depth"], raw_depth, size, "depth")
        raw_normals = read_image(paths["normals"], "RGB")
        check_size(paths["normals"], raw_normals, size, "normals")
        raw_semantic = read_image(paths["semantic"], "RGB")
        check_size(paths["semantic"], raw_semantic, size, "semantic")

        s = self.stride
        h, w = size[0] // s * s, size[1] // s * s
        # Area average for the image (rounded half up), top-left sample of each block for maps.
        blocks = image[:h, :w].reshape(h // s, s, w // s, s, 3).sum(axis=(1, 3), dtype=np.uint32)
        image = ((blocks + s * s // 2) // (s * s)).astype(np.uint8)
        raw_depth, raw_normals = raw_depth[:h:s, :w:s], raw_normals[:h:s, :w:s]
        raw_semantic = raw_semantic[:h:s, :w:s].astype(np.int64)

        depth_valid = raw_depth != DEPTH_MISSING
        depth = np.where(depth_valid, raw_depth / 512.0, 0.0).astype(np.float32)
        normals_valid = ~np.all(raw_normals == 128, axis=-1)
        normals = (raw_normals.astype(np.float32) - 127.5) / 127.5
        length = np.linalg.norm(normals, axis=-1, keepdims=True)
        normals = normals / np.maximum(length, 1e-6)
        index = raw_semantic[..., 0] * 65536 + raw_semantic[..., 1] * 256 + raw_semantic[..., 2]
        lut = self._labels()
        semantic = np.where(index < lut.size, lut[np.minimum(index, lut.size - 1)], IGNORE).astype(np.uint8)

        theta0 = self._reference_angle(sample_id, normals, depth, semantic, normals_valid, full_height=size[0])
        if theta0 is None:
            normals_valid[:] = False
        else:
            normals = global_to_local(normals, theta0)
        normals[~normals_valid] = 0

        r0, r1 = round(self.keep_rows[0] * image.shape[0]), round(self.keep_rows[1] * image.shape[0])
        sample = Sample(
            image=image[r0:r1],
            dataset=self.name,
            split=split,
            source=str(paths["rgb"]),
            sample_id=sample_id,
            semantic=semantic[r0:r1],
            depth=depth[r0:r1],
            depth_valid=depth_valid[r0:r1],
            normals=np.ascontiguousarray(normals[r0:r1]),
            normals_valid=normals_valid[r0:r1],
        )
        sample.check()
        return sample

    def _reference_angle(
        self,
        sample_id: str,
        normals: np.ndarray,
        depth: np.ndarray,
        semantic: np.ndarray,
        normals_valid: np.ndarray,
        full_height: int,
    ) -> float | None:
        """theta0 from the CSV, else estimated from the rescaled (uncropped) maps; None when
        no wall anchors it (the sample's normals are then marked invalid)."""
        if self.angles is not None:
            if sample_id not in self.angles:
                raise DatasetError(self.root, f"reference-angle CSV has no row for {sample_id!r}")
            return self.angles[sample_id]
        rows = np.arange(depth.shape[0]) * self.stride
        elevation = np.pi / 2 - np.pi * (rows + 0.5) / full_height
        wall = (semantic == CLASSES_13.index("wall")) & normals_valid
        try:
            return estimate_reference_angle(normals, depth, wall, elevation)
        except ValueError:
            return None
