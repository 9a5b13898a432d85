"""The Ray Data input pipeline: Parquet shards -> decode -> augment -> torch batches.

    ds = train_dataset(uri, "train", crop=(64, 64), tasks=("semantic", "depth"))
    trainer = TorchTrainer(loop, datasets={"train": ds}, dataset_config=data_config(),
                           scaling_config=ScalingConfig(num_workers=2,
                                                        resources_per_worker={"CPU": 0.5}))
    # in the loop:
    shard = ray.train.get_dataset_shard("train")
    for batch in shard.iter_torch_batches(batch_size=4, collate_fn=to_torch_batch): ...

Training reads the split's shards (local or S3), shuffles the encoded rows with a new order
every epoch (each iteration of the dataset is one execution; the seed makes the sequence of
orders reproducible), decodes them and applies the paper's flip + crop (`augment.py`).
Augmentation draws fresh randomness on every pass, so crops differ between epochs too.
Evaluation reads the split in order at full size, without augmentation.

Resources on a small machine (2 cores, 24 GiB): Ray Data's read/decode tasks need whole
logical CPUs that Train workers have not reserved. Two workers with `{"CPU": 1}` each on
a 2-CPU node leave nothing for Ray Data and the first batch never comes; give workers
fractional CPUs (0.5 each leaves one CPU to decode on) and cap the object store Ray Data may
fill (`DataResources`). Ray Train replaces a dataset's execution options with its own when
it splits it between workers, so pass `data_config(resources)` to the trainer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Optional, Sequence

import numpy as np
import ray
import torch

from pipelines.datasets import augment, shards, storage
from pipelines.datasets.schema import IMAGENET_MEAN, IMAGENET_STD
from pipelines.datasets.storage import StorageOptions

TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "semantic": ("semantic",),
    "depth": ("depth", "depth_valid"),
    "normals": ("normals", "normals_valid"),
    "boundary": ("boundary",),
}
# Evaluation extras, read when the split has them: all annotators for BSDS ODS/OIS,
# instance ids for Cityscapes iIoU.
EVAL_EXTRAS: dict[str, tuple[str, ...]] = {
    "semantic": ("instances",),
    "boundary": ("boundary_annotators",),
}
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


def fields_for(tasks: Sequence[str]) -> list[str]:
    """The target fields the given tasks train on, in schema order."""
    unknown = [t for t in tasks if t not in TASK_FIELDS]
    if unknown or not tasks:
        raise ValueError(f"tasks {list(tasks)}: each must be one of {sorted(TASK_FIELDS)}")
    return [f for t in tasks for f in TASK_FIELDS[t]]


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
    file_shuffle: Any = None,
) -> Any:
    fs, _ = storage.filesystem(files[0], options)
    paths = [storage.filesystem(f, options)[1] for f in files]
    ds = ray.data.read_parquet(
        paths,
        filesystem=fs,
        columns=_columns(fields),
        partitioning=None,
        shuffle=file_shuffle,
        num_cpus=resources.task_cpus,
    )
    ds.context.execution_options = ingest_options(resources)
    return ds


class _DecodeAugment:
    """Row function: decode the requested fields, then flip + crop with fresh randomness."""

    def __init__(
        self,
        fields: Sequence[str],
        crop: Optional[tuple[int, int]],
        margin: int,
    ) -> None:
        self.fields = list(fields)
        self.crop = crop
        self.margin = margin

    def __call__(self, row: Mapping[str, Any]) -> dict[str, Any]:
        sample: dict[str, Any] = shards.decode_row(row, self.fields)
        if self.crop is not None:
            rng = np.random.default_rng()  # fresh entropy: new crops every epoch
            sample = augment.random_flip_crop(sample, self.crop, rng, self.margin)
        sample["sample_id"] = row["sample_id"]
        return sample


def train_dataset(
    uri: str,
    split: str,
    crop: tuple[int, int],
    tasks: Sequence[str],
    seed: int = 0,
    storage_options: Optional[StorageOptions] = None,
    resources: DataResources = DataResources(),
    shuffle: Literal["rows", "files"] = "rows",
    margin: int = augment.MARGIN,
) -> Any:
    """The training pipeline of one split: shuffled, decoded, flipped and cropped rows.

    Args:
        uri: shard directory (local or s3://) written by `pipelines.datasets.convert`.
        split: which split to train on.
        crop: (h, w) random crop, multiples of 8.
        tasks: subset of "semantic", "depth", "normals", "boundary".
        seed: base seed of the per-epoch shuffle orders.
        storage_options: S3 settings (default: the AWS environment variables).
        resources: Ray Data limits (see `DataResources`).
        shuffle: "rows" shuffles all encoded rows each epoch (an all-to-all step that holds
            the split's encoded bytes in the object store, spilling to disk beyond it);
            "files" only shuffles the shard order, for splits far larger than memory;
            then pass `local_shuffle_buffer_size` to `iter_torch_batches`.
        margin: pixels the crop window may overhang each image border.

    Returns:
        ray.data.Dataset of rows: sample_id, image (h, w, 3) uint8 and the tasks' fields.
    """
    from ray.data import FileShuffleConfig, RandomSeedConfig

    if shuffle not in ("rows", "files"):
        raise ValueError(f"shuffle {shuffle!r} must be 'rows' or 'files'")
    crop = augment.check_crop(crop)
    fields = fields_for(tasks)
    files = _split_fields(uri, split, fields, storage_options)
    file_order = FileShuffleConfig(seed=seed, reseed_after_execution=True)
    ds = _read(files, fields, storage_options, resources, file_shuffle=file_order)
    if shuffle == "rows":
        ds = ds.random_shuffle(seed=RandomSeedConfig(seed=seed, reseed_after_execution=True))
    return ds.map(
        _DecodeAugment(fields, crop, margin),
        num_cpus=resources.task_cpus,
        concurrency=resources.concurrency,
    )


def eval_dataset(
    uri: str,
    split: str,
    tasks: Sequence[str],
    storage_options: Optional[StorageOptions] = None,
    resources: DataResources = DataResources(),
) -> Any:
    """The evaluation pipeline of one split: full-size decoded rows, in shard order.

    Besides the tasks' fields, rows carry boundary_annotators (boundary task) and instances
    (semantic task) when the split has them. Images of one split may differ in size
    (BSDS500 has portrait and landscape): iterate with batch_size=1 in that case.
    """
    fields = fields_for(tasks)
    files = _split_fields(uri, split, fields, storage_options)
    have = shards.read_manifest(uri, storage_options)["splits"][split]["fields"]
    extras = [f for t in tasks for f in EVAL_EXTRAS.get(t, ()) if f in have]
    ds = _read(files, fields + extras, storage_options, resources)
    ds.context.execution_options.preserve_order = True
    return ds.map(
        _DecodeAugment(fields + extras, None, 0),
        num_cpus=resources.task_cpus,
        concurrency=resources.concurrency,
    )


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
    String columns (sample_id, source) are left out.
    """
    out: dict[str, torch.Tensor] = {}
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    for key, value in batch.items():
        if key in ("sample_id", "source"):
            continue
        array = np.require(_stack(key, value), requirements=["C", "W"])  # torch wants writable
        if key == "image":
            image = torch.from_numpy(array).permute(0, 3, 1, 2).float()
            out[key] = (image / 255.0 - mean) / std
        elif key == "normals":
            normals = np.ascontiguousarray(array.transpose(0, 3, 1, 2), dtype=np.float32)
            out[key] = torch.from_numpy(normals)
        elif key in ("semantic", "boundary", "instances"):
            out[key] = torch.from_numpy(array.astype(np.int64))
        elif key in ("depth_valid", "normals_valid"):
            out[key] = torch.from_numpy(array.astype(np.bool_))
        elif key == "depth":
            out[key] = torch.from_numpy(array.astype(np.float32))
        elif key == "boundary_annotators":
            out[key] = torch.from_numpy(array.astype(np.uint8))
        else:
            raise KeyError(f"to_torch_batch: unknown batch column {key!r}")
    return out
