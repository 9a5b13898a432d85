"""The evaluation reader: one full-size image at a time, straight from a split's shards.

No Ray: evaluation reads the Parquet shards with pyarrow, decodes each row with the same
decoder the training pipeline uses, and yields batches of one image at its stored size.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

from pipelines.datasets import shards, storage
from pipelines.datasets.ray_pipeline import fields_for, to_torch_batch


def eval_batches(
    uri: str,
    split: str,
    tasks: Sequence[str],
    max_images: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of one image in the training layout, read straight from the split's shards."""
    import pyarrow.parquet as pq

    manifest = shards.read_manifest(uri)
    fields = fields_for(tasks)
    seen = 0
    for file_uri in shards.split_files(uri, split, manifest):
        fs, path = storage.filesystem(file_uri)
        with fs.open_input_file(path) as handle:
            table = pq.read_table(handle)
        for row in table.to_pylist():
            sample = shards.decode_row(row, fields)
            yield to_torch_batch({k: v[None] for k, v in sample.items()})
            seen += 1
            if max_images and seen >= max_images:
                return
