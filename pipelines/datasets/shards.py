"""Samples as Parquet rows, shard files of ~128 MB, and the manifest that lists them.

One row per `Sample`. Images are PNG (lossless, the default) or JPEG bytes; label maps
(semantic, boundary) are 8-bit PNGs and validity masks 1-bit PNGs; float and wide-integer
arrays (depth, normals, boundary_annotators, instances) are raw little-endian bytes with
`<field>_shape` and `<field>_dtype` columns. Every shard has the same Arrow schema; targets a
dataset lacks are null.

Layout under the output URI (a local directory or s3://bucket/prefix):

    manifest.json                    dataset, tasks, class names, per split: count, fields,
                                     shards, skipped files with reasons, schema version
    <split>/part-00000.parquet       shards, each published only once complete

Each row is its own Parquet row group, so any sample can be read alone (`shard_rows.py`).
A shard's footer carries its sample count and the target fields all its rows have, so a
manifest can be rebuilt from the shards alone (which is what reruns of the converter do).
"""
from __future__ import annotations

import io
import json
import re
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipelines.datasets import storage
from pipelines.datasets.schema import SCHEMA_VERSION, TARGET_FIELDS, Sample
from pipelines.datasets.storage import StorageOptions

MANIFEST_NAME = "manifest.json"
SHARD_PATTERN = re.compile(r"^part-(\d{5})\.parquet$")
IMAGE_FORMATS = ("png", "jpeg")
LABEL_FIELDS = ("semantic", "boundary")
MASK_FIELDS = ("depth_valid", "normals_valid")
ARRAY_FIELDS = ("depth", "normals", "boundary_annotators", "instances")
FIELD_DTYPES = {
    "semantic": np.uint8,
    "boundary": np.uint8,
    "depth_valid": np.bool_,
    "normals_valid": np.bool_,
    "depth": np.float32,
    "normals": np.float32,
    "boundary_annotators": np.uint8,
    "instances": np.int32,
}
_META_COUNT = b"pag_count"
_META_FIELDS = b"pag_fields"

ROW_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("source", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("image", pa.binary()),
    ]
    + [(f, pa.binary()) for f in LABEL_FIELDS + MASK_FIELDS]
    + [
        column
        for f in ARRAY_FIELDS
        for column in (
            (f, pa.binary()),
            (f"{f}_shape", pa.list_(pa.int32())),
            (f"{f}_dtype", pa.string()),
        )
    ]
)


class ShardError(ValueError):
    """A shard directory, shard or manifest is missing or malformed; names the path."""


def _png(array: np.ndarray, compress_level: int = 1) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def _encode_image(image: np.ndarray, image_format: str) -> bytes:
    if image_format == "png":
        return _png(image)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def encode_sample(sample: Sample, image_format: str = "png") -> dict[str, Any]:
    """One Parquet row (a dict keyed by ROW_SCHEMA's names) for `sample`.

    Raises:
        ValueError naming the sample's source if a target has the wrong dtype.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format {image_format!r} is not one of {IMAGE_FORMATS}")
    row: dict[str, Any] = {
        "sample_id": sample.sample_id,
        "dataset": sample.dataset,
        "split": sample.split,
        "source": sample.source,
        "height": int(sample.image.shape[0]),
        "width": int(sample.image.shape[1]),
        "image": _encode_image(sample.image, image_format),
    }
    for field, value in sample.targets().items():
        expected = FIELD_DTYPES[field]
        if value.dtype != expected:
            raise ValueError(
                f"{sample.source}: {field} has dtype {value.dtype}, expected {np.dtype(expected)}"
            )
        if field in ARRAY_FIELDS:
            array = np.ascontiguousarray(value)
            row[field] = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            row[f"{field}_shape"] = list(array.shape)
            row[f"{field}_dtype"] = array.dtype.newbyteorder("<").str
        else:
            row[field] = _png(np.ascontiguousarray(value))
    return row


def _decode_png(data: bytes, mode: str) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        if img.mode != mode:
            img = img.convert(mode)
        return np.asarray(img)


def decode_field(row: Mapping[str, Any], field: str) -> Optional[np.ndarray]:
    """Decode one field of a row to the schema's array (None if the row lacks it)."""
    data = row.get(field)
    if data is None:
        return None
    if field == "image":
        return _decode_png(data, "RGB")
    if field in LABEL_FIELDS:
        return _decode_png(data, "L")
    if field in MASK_FIELDS:
        return _decode_png(data, "1").astype(np.bool_)
    if field in ARRAY_FIELDS:
        shape = tuple(int(n) for n in row[f"{field}_shape"])
        array = np.frombuffer(data, dtype=np.dtype(row[f"{field}_dtype"])).reshape(shape)
        return array.astype(FIELD_DTYPES[field])  # a native-endian, writable copy
    raise KeyError(f"unknown field {field!r}; expected 'image' or one of {TARGET_FIELDS}")


def decode_row(row: Mapping[str, Any], fields: Sequence[str]) -> dict[str, np.ndarray]:
    """`image` and each field in `fields`, decoded; a missing requested field is an error."""
    out = {"image": decode_field(row, "image")}
    for field in fields:
        value = decode_field(row, field)
        if value is None:
            raise ShardError(f"{row.get('source')}: sample {row.get('sample_id')} has no {field!r}")
        out[field] = value
    return out


def row_to_sample(row: Mapping[str, Any]) -> Sample:
    """The `Sample` a row was encoded from (JPEG images come back approximately)."""
    targets = {f: decode_field(row, f) for f in TARGET_FIELDS}
    return Sample(
        image=decode_field(row, "image"),
        dataset=row["dataset"],
        split=row["split"],
        source=row["source"],
        sample_id=row["sample_id"],
        **targets,
    )


def shard_name(index: int) -> str:
    """File name of shard number `index` ("part-00003.parquet")."""
    return f"part-{index:05d}.parquet"


def write_shard(
    rows: Sequence[dict[str, Any]],
    uri: str,
    options: Optional[StorageOptions] = None,
) -> dict[str, Any]:
    """Write `rows` as a Parquet file published at `uri` atomically (`storage.write_stream`).

    Returns:
        {"count", "bytes", "fields"}: rows, file size, target fields present in every row.
    """
    fields = [f for f in TARGET_FIELDS if all(r.get(f) is not None for r in rows)]
    table = pa.Table.from_pylist(list(rows), schema=ROW_SCHEMA)
    table = table.replace_schema_metadata(
        {_META_COUNT: str(len(rows)).encode(), _META_FIELDS: json.dumps(fields).encode()}
    )
    # One row per row group: a sample is one ranged read away (see shard_rows.py).
    size = storage.write_stream(
        uri, lambda dst: pq.write_table(table, dst, compression="zstd", row_group_size=1), options
    )
    return {"count": len(rows), "bytes": size, "fields": fields}


def existing_shards(
    uri: str,
    split: str,
    options: Optional[StorageOptions] = None,
) -> list[dict[str, Any]]:
    """The complete shards of `split` under `uri`, read from their footers.

    Returns:
        One dict per shard, by index: {"file" (relative to uri), "index", "count",
        "bytes", "fields", "sample_ids"}.
    """
    out = []
    for shard_uri in storage.list_files(storage.join(uri, split), ".parquet", options):
        name = shard_uri.rsplit("/", 1)[-1]
        match = SHARD_PATTERN.match(name)
        if match is None:
            continue
        fs, path = storage.filesystem(shard_uri, options)
        try:
            with fs.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle)
                meta = parquet.schema_arrow.metadata or {}
                ids = parquet.read(columns=["sample_id"]).column("sample_id").to_pylist()
                size = handle.size()
        except (OSError, pa.ArrowInvalid) as exc:
            raise ShardError(f"{shard_uri}: not a readable Parquet shard ({exc})") from exc
        if _META_FIELDS not in meta:
            raise ShardError(
                f"{shard_uri}: no {_META_FIELDS.decode()} footer key; not written by this converter"
            )
        out.append(
            {
                "file": f"{split}/{name}",
                "index": int(match.group(1)),
                "count": len(ids),
                "bytes": int(size),
                "fields": json.loads(meta[_META_FIELDS]),
                "sample_ids": ids,
            }
        )
    return out


def manifest_uri(uri: str) -> str:
    """Where the manifest of the shard set at `uri` lives."""
    return storage.join(uri, MANIFEST_NAME)


def read_manifest(uri: str, options: Optional[StorageOptions] = None) -> dict[str, Any]:
    """The manifest of the shard set at `uri` (dataset, splits with counts, class names...).

    Raises:
        ShardError naming the manifest path if it is missing, not JSON, of another schema
        version, or lacks a required key.
    """
    path = manifest_uri(uri)
    try:
        manifest = json.loads(storage.read_bytes(path, options))
    except FileNotFoundError as exc:
        raise ShardError(f"{path}: no manifest; convert the dataset to shards first") from exc
    except ValueError as exc:
        raise ShardError(f"{path}: manifest is not valid JSON ({exc})") from exc
    required = ("schema_version", "dataset", "class_names", "splits")
    missing = [k for k in required if k not in manifest]
    if missing:
        raise ShardError(f"{path}: manifest lacks key(s) {missing}")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise ShardError(
            f"{path}: schema version {manifest['schema_version']}, this code reads {SCHEMA_VERSION}"
        )
    return manifest


def split_files(
    uri: str,
    split: str,
    manifest: Mapping[str, Any],
) -> list[str]:
    """URIs of the shards of `split`; ShardError naming the manifest if it has no samples."""
    splits = manifest["splits"]
    if split not in splits:
        raise ShardError(f"{manifest_uri(uri)}: no split {split!r}; manifest has {sorted(splits)}")
    entry = splits[split]
    if entry["count"] == 0 or not entry["shards"]:
        raise ShardError(f"{manifest_uri(uri)}: split {split!r} has no samples")
    return [storage.join(uri, shard["file"]) for shard in entry["shards"]]
