"""The readers by dataset name: a plain dict, a lookup with a clear error, and the protocol
every reader follows (what the shard converter and the tests rely on)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pipelines.datasets.bsds import BSDSReader
from pipelines.datasets.cityscapes import CityscapesReader
from pipelines.datasets.nyuv2 import NYUv2Reader
from pipelines.datasets.schema import Sample
from pipelines.datasets.stanford2d3d import Stanford2D3DReader


class Reader(Protocol):
    """A dataset in its published layout. `read` raises `errors.DatasetError` on bad input."""

    name: str
    tasks: tuple[str, ...]

    def splits(self) -> list[str]: ...

    def sample_ids(self, split: str) -> list[str]: ...

    def read(self, split: str, sample_id: str) -> Sample: ...

    def class_names(self) -> list[str]: ...


READERS: dict[str, type] = {
    "bsds500": BSDSReader,
    "nyuv2": NYUv2Reader,
    "stanford2d3d": Stanford2D3DReader,
    "cityscapes": CityscapesReader,
}


def get_reader(name: str, root: str | Path, **options: Any) -> Reader:
    """The reader for dataset `name` over the tree at `root`; `options` go to its constructor."""
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(READERS)}")
    return READERS[name](root, **options)
