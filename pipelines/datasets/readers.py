"""The readers by dataset name: a plain dict and a lookup with a clear error."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.datasets.bsds import BSDSReader
from pipelines.datasets.cityscapes import CityscapesReader
from pipelines.datasets.nyuv2 import NYUv2Reader
from pipelines.datasets.stanford2d3d import Stanford2D3DReader

READERS = {
    "bsds500": BSDSReader,
    "nyuv2": NYUv2Reader,
    "stanford2d3d": Stanford2D3DReader,
    "cityscapes": CityscapesReader,
}


def get_reader(name: str, root: str | Path, **options: Any):
    """The reader for dataset `name` over the tree at `root`; `options` go to its constructor."""
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(READERS)}")
    return READERS[name](root, **options)
