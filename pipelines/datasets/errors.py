"""The one error every dataset reader raises for bad input.

`DatasetError(path, problem)` names the offending file and what is wrong with it (missing
file, wrong .mat key, truncated image, label out of range, mismatched sizes). The shard
converter catches it to implement `--on-error skip` and records `path` and `problem` in its
manifest, so both are kept as attributes and survive pickling (Ray ships errors between
processes).
"""
from __future__ import annotations

from pathlib import Path


class DatasetError(Exception):
    """A dataset file is missing, unreadable or inconsistent.

    Args:
        path: the file (or directory) at fault.
        problem: what is wrong and what was expected.
    """

    def __init__(
        self,
        path: str | Path,
        problem: str,
    ) -> None:
        super().__init__(str(path), problem)
        self.path = str(path)
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"
