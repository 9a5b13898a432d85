"""Atomic writes of local files: a hidden temporary name beside the target, then a rename.

Readers see the old file or the new one, never a torn one, and a writer killed half-way
leaves only its hidden temporary `.<name>.tmp-<pid>-<random><suffix>` (unique per writer;
`pipelines.datasets.storage.remove_temp_files` sweeps such leftovers). Remote (s3://)
objects go through `pipelines.datasets.storage`, whose uploads are atomic by themselves.
"""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

TEMP_TAG = ".tmp-"  # in every temporary's name: .<name>.tmp-<pid>-<random><suffix>


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on error it is removed.

    The temporary keeps the target's suffix, so writers that choose a format by extension
    (PIL, matplotlib) write the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TEMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> Path:
    """`text` written to `path` atomically; returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """`obj` as indented, key-sorted JSON written to `path` atomically; returns `path`."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
