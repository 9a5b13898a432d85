"""The evaluation reader: one full-size image at a time, straight from a split's shards.

The one data path of evaluation (at the end of a stage, periodically during training, and
`python -m pipelines.evaluate`): no Ray. Each shard is read with pyarrow, each row decoded
with the decoder the training pipeline uses, and yielded at its stored size as a batch of
one, with the tasks' target fields and the evaluation-only fields the split has (all human
annotations for BSDS ODS/OIS/AP, instance ids for Cityscapes iIoU). Images of one split may
differ in size (BSDS500 has portrait and landscape ones), hence one image per batch.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch

from pag_model.tasks import eval_fields, target_fields
from pipelines.datasets import shards, storage
from pipelines.datasets.ray_pipeline import to_torch_batch
from pipelines.datasets.storage import StorageOptions


def eval_batches(
    uri: str,
    split: str,
    tasks: Sequence[str],
    max_images: int = 0,
    storage_options: Optional[StorageOptions] = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of one image in the training layout (`ray_pipeline.to_torch_batch`), in shard
    order, with the evaluation-only fields; at most `max_images` (0: the whole split).

    Raises:
        ShardError: naming the manifest if the split is missing, empty or lacks a task's field.
    """
    import pyarrow.parquet as pq

    manifest = shards.read_manifest(uri, storage_options)
    files = shards.split_files(uri, split, manifest)
    have = manifest["splits"][split]["fields"]
    missing = [f for f in target_fields(tasks) if f not in have]
    if missing:
        raise shards.ShardError(
            f"{shards.manifest_uri(uri)}: split {split!r} of {manifest['dataset']!r} lacks "
            f"{missing} (it has {have}); choose tasks this dataset annotates"
        )
    try:
        fields = eval_fields(tasks, have)
    except ValueError as err:
        raise shards.ShardError(f"{shards.manifest_uri(uri)}: split {split!r}: {err}") from err
    seen = 0
    for file_uri in files:
        fs, path = storage.filesystem(file_uri, storage_options)
        with fs.open_input_file(path) as handle:
            table = pq.read_table(handle)
        for row in table.to_pylist():
            sample = shards.decode_row(row, fields)
            yield to_torch_batch({k: v[None] for k, v in sample.items()})
            seen += 1
            if max_images and seen >= max_images:
                return
