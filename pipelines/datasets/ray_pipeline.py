"""The Ray Data input pipeline: Parquet shards -> decode -> augment -> torch batches.

    ds = train_dataset(uri, "train", crop=(64, 64), tasks=("semantic", "depth"))
    trainer = TorchTrainer(loop, datasets={"train": ds}, dataset_config=data_config(),
                           scaling_config=ScalingConfig(num_workers=2,
                                                        resources_per_worker={"CPU": 0.5}))
    # in the loop:
    shard = ray.train.get_dataset_shard("train")
    for batch in shard.iter_torch_batches(batch_size=4, collate_fn=TorchCollate()): ...

Training permutes the split's samples anew every epoch (each iteration of the dataset is one
execution), reads each sample's row from its shard (local or S3), decodes it and applies
the paper's flip + crop (`augment.py`) with fresh randomness, so crops differ between epochs
too. Decode tasks hand depth and normals on in compact dtypes (`wire.py`: float16 depth / 16,
int16 normals; 3.8 instead of 6.0 MB per 4-sample NYUv2 block through the object store), and
`to_torch_batch` converts them back to float32 in the training process, within the bounds
`wire.py` states. Evaluation streams the shards with `read_parquet`, in order, at full size.

Resources on a small machine (2 cores, 24 GiB): Ray Data's read/decode tasks need whole
logical CPUs that Train workers have not reserved. Two workers with `{"CPU": 1}` each on
a 2-CPU node leave nothing for Ray Data and the first batch never comes; give workers
fractional CPUs (0.5 each leaves one CPU to decode on) and cap the object store Ray Data may
fill (`DataResources`). Ray Train replaces a dataset's execution options with its own when
it splits it between workers, so pass `data_config(resources)` to the trainer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import ray
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from pag_model.tasks import target_fields
from pipelines.datasets import augment, shard_rows, shards, storage, wire
from pipelines.datasets.schema import IMAGENET_MEAN, IMAGENET_STD
from pipelines.datasets.storage import StorageOptions

_META_COLUMNS = ["sample_id", "source", "image"]


@dataclass(frozen=True)
class DataResources:
    """Limits for Ray Data beside Ray Train workers.

    Args:
        cpu: logical CPUs Ray Data's operators may hold at once (None: all that Train
            has not reserved).
        object_store_bytes: object store memory Ray Data may fill before it pauses reads
            (None: Ray's default share).
        task_cpus: logical CPUs each read + decode + augment task asks for.
        concurrency: most decode tasks at once (None: as many as resources allow).
    """

    cpu: Optional[float] = None
    object_store_bytes: Optional[int] = 1 << 30
    task_cpus: float = 1.0
    concurrency: Optional[int] = None


def ingest_options(resources: DataResources = DataResources()) -> Any:
    """Ray Data ExecutionOptions carrying `resources`' limits."""
    from ray.data import ExecutionOptions, ExecutionResources

    limits = ExecutionResources.for_limits(
        cpu=resources.cpu,
        object_store_memory=resources.object_store_bytes,
    )
    return ExecutionOptions(resource_limits=limits)


def data_config(resources: DataResources = DataResources()) -> Any:
    """A ray.train.DataConfig that splits every dataset between workers under these limits."""
    from ray.train import DataConfig

    return DataConfig(execution_options=ingest_options(resources))


def _columns(fields: Sequence[str]) -> list[str]:
    columns = list(_META_COLUMNS)
    for f in fields:
        columns.append(f)
        if f in shards.ARRAY_FIELDS:
            columns += [f"{f}_shape", f"{f}_dtype"]
    return columns


def _split_fields(
    uri: str,
    split: str,
    fields: Sequence[str],
    options: Optional[StorageOptions],
) -> list[str]:
    """Shard URIs of `split`, after checking the split has every field in `fields`."""
    manifest = shards.read_manifest(uri, options)
    files = shards.split_files(uri, split, manifest)
    have = manifest["splits"][split]["fields"]
    missing = [f for f in fields if f not in have]
    if missing:
        raise shards.ShardError(
            f"{shards.manifest_uri(uri)}: split {split!r} of {manifest['dataset']!r} lacks "
            f"{missing} (it has {have}); choose tasks this dataset annotates"
        )
    return files


def _read(
    files: Sequence[str],
    fields: Sequence[str],
    options: Optional[StorageOptions],
    resources: DataResources,
) -> Any:
    fs, _ = storage.filesystem(files[0], options)
    paths = [storage.filesystem(f, options)[1] for f in files]
    ds = ray.data.read_parquet(
        paths,
        filesystem=fs,
        columns=_columns(fields),
        partitioning=None,
        num_cpus=resources.task_cpus,
    )
    ds.context.execution_options = ingest_options(resources)
    return ds


def train_dataset(
    uri: str,
    split: str,
    crop: tuple[int, int],
    tasks: Sequence[str],
    seed: int = 0,
    storage_options: Optional[StorageOptions] = None,
    resources: DataResources = DataResources(),
    margin: int = augment.MARGIN,
    rows_per_task: int = 32,
    rows_per_block: int = 4,
    compact: bool = True,
) -> Any:
    """The training pipeline of one split: shuffled, decoded, flipped and cropped samples.

    The split's row addresses (`shard_rows.py`) are held one per block; every execution
    (epoch) permutes the blocks anew, which moves no data and starts no tasks. Tasks of
    `rows_per_task` addresses then read their rows from the shards, decode and augment them,
    and hand on blocks of `rows_per_block` samples as they go, so the first batch comes as
    soon as its rows are decoded. Tasks are few and long because Ray Data spends tens of
    milliseconds on each task on a loaded 2-core machine, as much as decoding a sample.

    Args:
        uri: shard directory (local or s3://) written by `pipelines.datasets.convert`.
        split: which split to train on.
        crop: (h, w) random crop, multiples of 8.
        tasks: subset of "semantic", "depth", "normals", "boundary".
        seed: base seed of the per-epoch permutations (Ray combines it with the dataset's
            execution index, so every epoch differs); flips and crops draw fresh randomness.
        storage_options: S3 settings (default: the AWS environment variables).
        resources: Ray Data limits (see `DataResources`).
        margin: pixels the crop window may overhang each image border.
        rows_per_task: samples one read + decode task handles.
        rows_per_block: samples per output block (match the training batch size).
        compact: ship depth and normals in the compact dtypes of `wire.py` (float16 depth
            / 16, int16 normals * 32767: 3.8 instead of 6.0 MB per 4-sample NYUv2 block);
            `to_torch_batch` converts them back. False: float32 as decoded.

    Returns:
        ray.data.Dataset of rows: sample_id, image (h, w, 3) uint8 and the tasks' fields
        (depth and normals in their wire dtypes if compact).
    """
    from ray.data import RandomSeedConfig

    crop = augment.check_crop(crop)
    fields = target_fields(tasks)
    files = _split_fields(uri, split, fields, storage_options)
    reader = shard_rows.RowReader(files, _columns(fields), storage_options)
    addresses = shard_rows.row_addresses(files, reader.options)
    items = [{"file": f, "group": g, "offset": o} for f, g, o in addresses]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds.context.execution_options = ingest_options(resources)
    # A target a bit below one group's size makes every yielded group one block of exactly
    # rows_per_block samples (Ray splits blocks only beyond 1.5x the target), so batches of
    # that size need no copying in the training worker.
    block_bytes = rows_per_block * _row_bytes(reader, addresses[0], fields, crop, compact)
    ds.context.target_max_block_size = int(0.8 * block_bytes)
    ds = ds.randomize_block_order(seed=RandomSeedConfig(seed=seed, reseed_after_execution=True))
    return ds.map_batches(
        shard_rows.SampleLoader(reader, fields, crop, margin, rows_per_block, compact),
        batch_size=rows_per_task,
        batch_format="numpy",
        num_cpus=resources.task_cpus,
        concurrency=resources.concurrency,
    )


def _row_bytes(
    reader: shard_rows.RowReader,
    address: tuple[int, int, int],
    fields: Sequence[str],
    crop: tuple[int, int],
    compact: bool,
) -> int:
    """Bytes of one decoded, cropped sample as shipped (read from the first row)."""
    sample = shard_rows.SampleLoader(reader, fields, crop, compact=compact).load(*address)
    return sum(v.nbytes for v in sample.values() if isinstance(v, np.ndarray))


def _stack(key: str, value: Any) -> np.ndarray:
    """A batch column as one array; images of different sizes cannot share a batch."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value
    items = list(value)
    shapes = {tuple(v.shape) for v in items}
    if len(shapes) > 1:
        raise ValueError(
            f"batch column {key!r} holds arrays of shapes {sorted(shapes)}; use batch_size=1"
        )
    return np.stack(items)


def to_torch_batch(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Collate a numpy batch into the training layout of `schema.py`.

    image (B, 3, H, W) float32 normalised; semantic, boundary (B, H, W) int64; depth
    (B, H, W) float32; depth_valid, normals_valid (B, H, W) bool; normals (B, 3, H, W)
    float32; boundary_annotators (B, K, H, W) uint8; instances (B, H, W) int64.
    String columns (sample_id, source) are left out. Depth and normals may come in their
    float32 schema dtypes or in the compact wire dtypes of `wire.py` (float16 depth / 16,
    int16 normals * 32767), which are converted back here.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in batch.items():
        if key in ("sample_id", "source"):
            continue
        array = _stack(key, value)
        if key == "image":
            out[key] = torch.from_numpy(_normalise(array))
        elif key == "normals":
            out[key] = torch.from_numpy(wire.normals_from_wire(array))
        elif key == "depth":
            out[key] = torch.from_numpy(wire.depth_from_wire(array))
        elif key in _TORCH_DTYPES:
            # Always a copy: Ray hands out read-only arrays, torch wants writable memory.
            out[key] = torch.from_numpy(np.array(array, dtype=_TORCH_DTYPES[key], order="C"))
        else:
            raise KeyError(f"to_torch_batch: unknown batch column {key!r}")
    return out


_TORCH_DTYPES = {
    "semantic": np.int64,
    "boundary": np.int64,
    "instances": np.int64,
    "depth_valid": np.bool_,
    "normals_valid": np.bool_,
    "boundary_annotators": np.uint8,
}
# (x / 255 - mean) / std as one multiply-add: x * SCALE + SHIFT, per channel, in float32.
_SCALE = (1.0 / (255.0 * np.array(IMAGENET_STD, np.float32))).reshape(1, 3, 1, 1)
_SHIFT = (-np.array(IMAGENET_MEAN, np.float32) / np.array(IMAGENET_STD, np.float32)).reshape(
    1, 3, 1, 1
)


def _normalise(image: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 normalised, in one pass (numpy: ~6x
    faster than the same in torch ops on a busy 2-core machine)."""
    b, h, w, _ = image.shape
    out = np.empty((b, 3, h, w), np.float32)
    np.multiply(image.transpose(0, 3, 1, 2), _SCALE, out=out)
    out += _SHIFT
    return out


class TorchCollate(NumpyBatchCollateFn):
    """`to_torch_batch` as the collate class `iter_torch_batches` expects since Ray 2.47."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return to_torch_batch(batch)
