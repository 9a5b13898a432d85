"""Random access to single rows of Parquet shards: per-epoch shuffles without moving data.

The converter writes one row per Parquet row group, so a sample has an address
(shard, row group) and reading it costs one ranged read of its own bytes, locally or on S3.
A training epoch is then a fresh permutation of addresses, a few bytes each, instead of an
all-to-all shuffle of the encoded samples. `SampleLoader` does the per-sample work (read,
decode, flip + crop) for the Ray Data pipeline and for the DataLoader baseline of the input
benchmark alike; it does not import torch, so Ray Data's worker processes stay light.

Each process keeps the shards it opened (footer parsed once) in a small module-level cache,
since Ray ships the reader to every task anew.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import pyarrow.parquet as pq

from pipelines.datasets import augment, storage, wire
from pipelines.datasets.shards import ShardError, decode_row
from pipelines.datasets.storage import StorageOptions

_MAX_OPEN = 32
_OPEN: "OrderedDict[tuple[str, Optional[StorageOptions]], pq.ParquetFile]" = OrderedDict()


def _open(uri: str, options: Optional[StorageOptions]) -> pq.ParquetFile:
    """The ParquetFile at `uri`, from this process's cache when possible."""
    key = (uri, options)
    if key in _OPEN:
        _OPEN.move_to_end(key)
        return _OPEN[key]
    fs, path = storage.filesystem(uri, options)
    try:
        parquet = pq.ParquetFile(fs.open_input_file(path))
    except (OSError, ValueError) as exc:
        raise ShardError(f"{uri}: cannot open shard ({exc})") from exc
    _OPEN[key] = parquet
    while len(_OPEN) > _MAX_OPEN:
        _OPEN.popitem(last=False)
    return parquet


def forget_open_files() -> None:
    """Drop this process's open shards (e.g. in a forked DataLoader worker)."""
    _OPEN.clear()


def row_addresses(
    files: Sequence[str],
    options: Optional[StorageOptions] = None,
) -> list[tuple[int, int, int]]:
    """(file index, row group, row within the group) of every row of `files`, in order."""
    addresses = []
    for f, uri in enumerate(files):
        metadata = _open(uri, options).metadata
        for group in range(metadata.num_row_groups):
            addresses += [(f, group, r) for r in range(metadata.row_group(group).num_rows)]
    return addresses


class RowReader:
    """Reads single rows of a fixed list of shards.

    Args:
        files: shard URIs (local paths or s3://); addresses index into this list.
        columns: columns to read (the others are not fetched).
        options: S3 settings; resolved from the environment once, where the reader is made,
            so processes without the AWS variables (Ray workers) can still read.
    """

    def __init__(
        self,
        files: Sequence[str],
        columns: Sequence[str],
        options: Optional[StorageOptions] = None,
    ) -> None:
        self.files = list(files)
        self.columns = list(columns)
        self.options = options if options is not None else StorageOptions.from_env()

    def read(self, file_index: int, group: int, offset: int) -> dict[str, Any]:
        """The row at this address as a dict of Python values (bytes for binary columns)."""
        parquet = _open(self.files[file_index], self.options)
        table = parquet.read_row_group(group, columns=self.columns)
        return table.slice(offset, 1).to_pylist()[0]


class SampleLoader:
    """Read, decode and (for training) flip + crop samples by address.

    The per-sample work of the input pipelines, free of torch so Ray Data's worker processes
    stay light. Called on a batch of addresses (columns "file", "group", "offset", as Ray
    Data's `map_batches` passes them), it yields the samples stacked in small groups.

    Args:
        reader: where the rows come from (None when only `decode` is used).
        fields: target fields to decode besides the image.
        crop: (h, w) random crop after a random flip; None = full size, no augmentation.
        margin: pixels a crop window may overhang each image border.
        rows_per_block: samples per yielded group when called on a batch of addresses.
        compact: hand depth and normals on in their wire dtypes (`wire.py`: float16 depth,
            int16 normals), to be converted back in the collate (`ray_pipeline.to_torch_batch`);
            False: float32 as decoded.
    """

    def __init__(
        self,
        reader: Optional[RowReader],
        fields: Sequence[str],
        crop: Optional[tuple[int, int]],
        margin: int = augment.MARGIN,
        rows_per_block: int = 4,
        compact: bool = True,
    ) -> None:
        self.reader = reader
        self.compact = compact
        self.fields = list(fields)
        self.crop = crop
        self.margin = margin
        self.rows_per_block = rows_per_block

    def load(self, file_index: int, group: int, offset: int) -> dict[str, Any]:
        """One sample: sample_id, image (H, W, 3) and the fields, augmented if cropping,
        depth and normals in their wire dtypes if compact."""
        if self.reader is None:
            raise ValueError("SampleLoader.load needs a RowReader; this one only decodes rows")
        row = self.reader.read(file_index, group, offset)
        return self.decode(row)

    def decode(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Decode (and augment) one encoded row."""
        sample: dict[str, Any] = decode_row(row, self.fields)
        if self.crop is not None:
            rng = np.random.default_rng()  # fresh entropy: new flips and crops every epoch
            sample = augment.random_flip_crop(sample, self.crop, rng, self.margin)
        if self.compact:
            sample = wire.to_wire(sample, str(row.get("source", row["sample_id"])))
        sample["sample_id"] = row["sample_id"]
        return sample

    def __call__(self, batch: Mapping[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Load the batch's addresses, yielding stacked groups of `rows_per_block` samples.

        Yielding (rather than returning one array for the whole batch) lets Ray Data hand
        each group downstream while the task goes on with the next.
        """
        addresses = list(zip(batch["file"], batch["group"], batch["offset"]))
        for start in range(0, len(addresses), self.rows_per_block):
            group = addresses[start:start + self.rows_per_block]
            samples = [self.load(int(f), int(g), int(o)) for f, g, o in group]
            yield {key: np.stack([s[key] for s in samples]) for key in samples[0]}
