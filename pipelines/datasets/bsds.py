"""BSDS500 reader: jpg images and MATLAB v5 ground truth with K human annotators.

Layout (as Berkeley ships it): `BSR/BSDS500/data/images/{train,val,test}/<id>.jpg` and
`BSR/BSDS500/data/groundTruth/{split}/<id>.mat`, each .mat holding `groundTruth`, a 1 x K
cell of structs with `Segmentation` and `Boundaries`. Samples keep every annotator's map
(`boundary_annotators`, for evaluation) and the HED/RCF training label: the mean of the K
maps, 0 -> negative, >= 0.5 -> positive, in between -> IGNORE.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.datasets.errors import DatasetError
from pipelines.datasets.files import check_size, load_mat, read_image
from pipelines.datasets.schema import IGNORE, Sample

SPLITS = ("train", "val", "test")


def boundary_label(annotators: np.ndarray, positive: float = 0.5) -> np.ndarray:
    """(K, H, W) 0/1 annotator maps -> (H, W) uint8 label: 0, 1, or IGNORE where 0 < mean < positive."""
    mean = annotators.mean(axis=0)
    label = np.full(mean.shape, IGNORE, np.uint8)
    label[mean == 0] = 0
    label[mean >= positive] = 1
    return label


class BSDSReader:
    """Reads BSDS500 as published.

    Args:
        root: directory containing `BSR/` (or the `BSR/BSDS500/data` directory itself).
        positive: mean annotator vote at or above which a pixel is a positive boundary.
    """

    name = "bsds500"
    tasks = ("boundary",)

    def __init__(
        self,
        root: str | Path,
        positive: float = 0.5,
    ) -> None:
        root = Path(root)
        self.data = root / "BSR" / "BSDS500" / "data" if (root / "BSR").is_dir() else root
        if not (self.data / "images").is_dir():
            raise DatasetError(root, "not a BSDS500 tree: expected BSR/BSDS500/data/images/")
        self.positive = positive

    def splits(self) -> list[str]:
        """All three published splits, present or not: a missing one is an error when listed."""
        return list(SPLITS)

    def class_names(self) -> list[str]:
        return []

    def sample_ids(self, split: str) -> list[str]:
        folder = self.data / "images" / split
        if split not in SPLITS:
            raise DatasetError(folder, f"no split {split!r}; expected one of {list(SPLITS)}")
        if not folder.is_dir():
            raise DatasetError(
                folder,
                "folder not found; BSDS500 ships images/{train,val,test} (200, 100, 200 images) and the "
                "paper trains on train+val; convert only the splits you have with --splits",
            )
        return sorted(p.stem for p in folder.iterdir() if p.suffix.lower() == ".jpg")

    def read(self, split: str, sample_id: str) -> Sample:
        image_path = self.data / "images" / split / f"{sample_id}.jpg"
        gt_path = self.data / "groundTruth" / split / f"{sample_id}.mat"
        image = read_image(image_path, "RGB")
        annotators = self._annotators(gt_path)
        check_size(gt_path, annotators[0], image.shape[:2], "Boundaries")
        sample = Sample(
            image=image,
            dataset=self.name,
            split=split,
            source=str(image_path),
            sample_id=sample_id,
            boundary=boundary_label(annotators, self.positive),
            boundary_annotators=annotators,
        )
        sample.check()
        return sample

    @staticmethod
    def _annotators(path: Path) -> np.ndarray:
        """(K, H, W) uint8 0/1 Boundaries maps of every annotator in a groundTruth .mat."""
        cells = load_mat(path, ("groundTruth",))["groundTruth"]
        if cells.dtype != object or cells.size == 0:
            raise DatasetError(path, f"groundTruth must be a 1 x K cell, got {cells.dtype} {cells.shape}")
        maps = []
        for k, cell in enumerate(cells.ravel()):
            names = cell.dtype.names or ()
            if "Boundaries" not in names:
                raise DatasetError(path, f"groundTruth{{{k + 1}}} has fields {list(names)}, expected 'Boundaries'")
            bmap = np.asarray(cell["Boundaries"][0, 0])
            if bmap.ndim != 2 or (maps and bmap.shape != maps[0].shape):
                raise DatasetError(path, f"groundTruth{{{k + 1}}}.Boundaries has shape {bmap.shape}, expected {maps[0].shape if maps else '(H, W)'}")
            if bmap.size and (bmap.min() < 0 or bmap.max() > 1):
                raise DatasetError(path, f"groundTruth{{{k + 1}}}.Boundaries values {bmap.min()}..{bmap.max()} out of range, expected 0/1")
            maps.append(bmap.astype(np.uint8))
        return np.stack(maps)
