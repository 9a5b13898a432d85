"""A cheap integrity check of a split's shard files, run before any worker starts.

For each shard the manifest lists: the file exists, its size is the size the manifest
recorded (when it recorded one), and its Parquet footer reads with the manifest's row count.
Reading a footer costs one small ranged read per file (local or S3); no row is decoded. A
missing or truncated shard is then an error naming the file, not a worker traceback mid-stage.
"""
from __future__ import annotations

from typing import Any, Mapping

import pyarrow.parquet as pq

from pipelines.datasets import storage
from pipelines.datasets.shards import ShardError, manifest_uri


def check_split_shards(uri: str, split: str, manifest: Mapping[str, Any]) -> int:
    """Check every shard of `split` under `uri`; returns the rows they hold.

    Raises:
        ShardError naming the shard file, what is wrong, and how to recover.
    """
    rows = 0
    fix = (
        f"delete that file if present and re-run pipelines.datasets.convert with --out {uri} "
        "(it writes again the samples no complete shard holds)"
    )
    for entry in manifest["splits"][split]["shards"]:
        shard = storage.join(uri, entry["file"])
        fs, path = storage.filesystem(shard)
        info = fs.get_file_info(path)
        if info.type != info.type.File:
            raise ShardError(f"{shard}: shard of split {split!r} listed in {manifest_uri(uri)} is missing; {fix}")
        expected = entry.get("bytes")
        if expected is not None and info.size != expected:
            raise ShardError(
                f"{shard}: {info.size} bytes, the manifest recorded {expected} (truncated or replaced); {fix}"
            )
        try:
            with fs.open_input_file(path) as handle:
                count = pq.ParquetFile(handle).metadata.num_rows
        except Exception as err:  # pyarrow raises ArrowInvalid / OSError for a torn footer
            raise ShardError(f"{shard}: not a readable Parquet file ({err}); {fix}") from None
        if "count" in entry and count != entry["count"]:
            raise ShardError(f"{shard}: {count} rows, the manifest recorded {entry['count']}; {fix}")
        rows += count
    return rows
