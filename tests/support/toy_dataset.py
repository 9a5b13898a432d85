"""Hand-built samples whose pixels say where they came from, and a reader that serves them.

`make_sample(i)` fills every schema field with a positional code, so a test can tell from
any crop or flip which source pixel landed where, without trusting the code under test:

- image   R = row, G = column, B = 10 * i   (rows/columns < 256)
- depth   row * 1000 + column + 0.5         (exact in float32)
- semantic (row + column + i) % 3;  boundary (row + 2 * column) % 2, IGNORE on row 1
- normals (0.6, 0.0, 0.8) everywhere;       normals_valid False on column 0
- depth_valid False on row 0;  boundary_annotators (3, H, W) = (row + k) % 2;
  instances 26000 + i (Cityscapes style)

`ListReader` has the reader interface of `pipelines.datasets.readers` (name, tasks, splits,
sample_ids, read, class_names) over such samples; `bad` maps sample ids to a DatasetError
that `read` raises, standing in for a broken file.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from pipelines.datasets.errors import DatasetError
from pipelines.datasets.schema import IGNORE, Sample

CLASS_NAMES = ("wall", "floor", "chair")
NORMAL = (0.6, 0.0, 0.8)


def make_sample(
    index: int,
    size: tuple[int, int] = (40, 56),
    split: str = "train",
) -> Sample:
    """The coded sample number `index` (0..25) of `split`."""
    h, w = size
    rows, cols = np.mgrid[0:h, 0:w]
    image = np.stack([rows, cols, np.full_like(rows, 10 * index)], axis=-1).astype(np.uint8)
    semantic = ((rows + cols + index) % 3).astype(np.uint8)
    boundary = ((rows + 2 * cols) % 2).astype(np.uint8)
    boundary[1, :] = IGNORE
    depth_valid = np.ones((h, w), bool)
    depth_valid[0, :] = False
    normals_valid = np.ones((h, w), bool)
    normals_valid[:, 0] = False
    return Sample(
        image=image,
        dataset="toy",
        split=split,
        source=f"/toy/{split}/{index:02d}.png",
        sample_id=f"{split}-{index:02d}",
        semantic=semantic,
        depth=(rows * 1000 + cols + 0.5).astype(np.float32),
        depth_valid=depth_valid,
        normals=np.broadcast_to(np.array(NORMAL, np.float32), (h, w, 3)).copy(),
        normals_valid=normals_valid,
        boundary=boundary,
        boundary_annotators=np.stack([(rows + k) % 2 for k in range(3)]).astype(np.uint8),
        instances=np.full((h, w), 26000 + index, np.int32),
    )


class ListReader:
    """A dataset reader over in-memory samples.

    Args:
        splits: samples by split name, in reading order.
        bad: sample id -> error `read` raises for it.
        name: dataset name.
    """

    tasks = ("semantic", "depth", "normals", "boundary")

    def __init__(
        self,
        splits: Mapping[str, Sequence[Sample]],
        bad: Optional[Mapping[str, DatasetError]] = None,
        name: str = "toy",
    ) -> None:
        self._splits = {k: list(v) for k, v in splits.items()}
        self._bad = dict(bad or {})
        self.name = name
        self.reads = 0

    def splits(self) -> list[str]:
        return list(self._splits)

    def sample_ids(self, split: str) -> list[str]:
        ids = [s.sample_id for s in self._splits[split]]
        return ids + [sid for sid in self._bad if sid.startswith(f"{split}-") and sid not in ids]

    def read(self, split: str, sample_id: str) -> Sample:
        self.reads += 1
        if sample_id in self._bad:
            raise self._bad[sample_id]
        return next(s for s in self._splits[split] if s.sample_id == sample_id)

    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)
