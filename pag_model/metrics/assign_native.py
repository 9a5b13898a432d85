"""Optional compiled fast path for the boundary matcher's assignment problems.

`csrc/assign.c` finds a maximum-cardinality matching (Hopcroft-Karp), the alternating-path reach from
free vertices, and solves a minimum-cost full matching (every row matched) of a sparse
bipartite graph with integer costs by successive shortest paths. It is compiled with the
system C compiler on first use into a per-user cache directory (atomically: build to a
temporary name, then rename) and loaded with ctypes; there is no Python-API glue. Without
a compiler, or with PAG_METRICS_NATIVE=0 in the environment (read once, at first use), the
matcher uses scipy's LAPJVsp, which is also the oracle the tests compare this path with.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

_SOURCE = Path(__file__).with_name("csrc") / "assign.c"
_library: Optional[ctypes.CDLL] = None
_tried = False


def _cache_dir() -> Path:
    root = os.environ.get("PAG_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "pag_ray"
    )
    return Path(root) / "metrics"


def _build() -> ctypes.CDLL:
    """Compile (once per source version) and load the shared library."""
    source = _SOURCE.read_bytes()
    tag = hashlib.sha1(source + sys.platform.encode()).hexdigest()[:12]
    target = _cache_dir() / f"pag_assign_{tag}{sysconfig.get_config_var('SHLIB_SUFFIX') or '.so'}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        compiler = os.environ.get("CC", "cc")
        handle, tmp = tempfile.mkstemp(prefix=".assign-", suffix=".so", dir=target.parent)
        os.close(handle)
        try:
            subprocess.run(
                [compiler, "-O2", "-shared", "-fPIC", "-o", tmp, str(_SOURCE)],
                check=True, capture_output=True, text=True,
            )
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    library = ctypes.CDLL(str(target))
    function = library.pag_assign_full
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_int32, ctypes.c_int32] + [ctypes.c_void_p] * 4
    matching = library.pag_max_matching
    matching.restype = ctypes.c_int64
    matching.argtypes = [ctypes.c_int32, ctypes.c_int32] + [ctypes.c_void_p] * 4
    reach = library.pag_alternating_reach
    reach.restype = ctypes.c_int64
    reach.argtypes = [ctypes.c_int32] + [ctypes.c_void_p] * 6
    return library


def native_library() -> Optional[ctypes.CDLL]:
    """The compiled library, or None when disabled or not buildable here."""
    global _library, _tried
    if not _tried:
        _tried = True
        if os.environ.get("PAG_METRICS_NATIVE", "1") != "0":
            try:
                _library = _build()
            except (OSError, subprocess.CalledProcessError) as error:
                detail = getattr(error, "stderr", "") or str(error)
                warnings.warn(f"boundary matcher: compiled fast path unavailable ({detail.strip()[:200]}); using scipy")
    return _library


def assign_full(
    indptr: np.ndarray,
    indices: np.ndarray,
    cost: np.ndarray,
    n_cols: int,
) -> np.ndarray:
    """Minimum-cost matching of every row of a CSR graph (compiled path).

    Args:
        indptr: (R + 1,) CSR row pointers.
        indices: (E,) column of each edge.
        cost: (E,) integer cost of each edge (>= 0).
        n_cols: number of columns.

    Returns:
        (R,) int32 column matched to each row.
    """
    library = native_library()
    if library is None:
        raise RuntimeError("assign_full: the compiled fast path is not available")
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    cost = np.ascontiguousarray(cost, dtype=np.int64)
    n_rows = len(indptr) - 1
    out = np.empty(max(n_rows, 1), dtype=np.int32)
    status = library.pag_assign_full(
        n_rows, int(n_cols), indptr.ctypes.data, indices.ctypes.data, cost.ctypes.data, out.ctypes.data
    )
    if status == 1:
        raise ValueError("assign_full: some row has no full matching (the graph has no row-saturating matching)")
    if status:
        raise MemoryError("assign_full: out of memory in the compiled matcher")
    return out[:n_rows]


def max_matching(indptr: np.ndarray, indices: np.ndarray, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-cardinality matching of a CSR graph (Hopcroft-Karp, compiled path).

    Args:
        indptr: (R + 1,) CSR row pointers.
        indices: (E,) column of each edge.
        n_cols: number of columns.

    Returns:
        (row_match, col_match): (R,) and (n_cols,) int64 partners, -1 when unmatched.
    """
    library = native_library()
    if library is None:
        raise RuntimeError("max_matching: the compiled fast path is not available")
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    n_rows = len(indptr) - 1
    row_match = np.empty(max(n_rows, 1), dtype=np.int32)
    col_match = np.empty(max(n_cols, 1), dtype=np.int32)
    size = library.pag_max_matching(
        n_rows, int(n_cols), indptr.ctypes.data, indices.ctypes.data, row_match.ctypes.data, col_match.ctypes.data
    )
    if size < 0:
        raise MemoryError("max_matching: out of memory in the compiled matcher")
    return row_match[:n_rows].astype(np.int64), col_match[:n_cols].astype(np.int64)


def alternating_reach(
    indptr: np.ndarray,
    indices: np.ndarray,
    row_match: np.ndarray,
    col_match: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns reachable from the free rows by alternating paths (compiled path).

    Args:
        indptr: (R + 1,) CSR row pointers.
        indices: (E,) column of each edge.
        row_match: (R,) matched column of each row or -1.
        col_match: (C,) matched row of each column or -1.

    Returns:
        (row_seen, col_seen): (R,) and (C,) bool masks.
    """
    library = native_library()
    if library is None:
        raise RuntimeError("alternating_reach: the compiled fast path is not available")
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    row_match = np.ascontiguousarray(row_match, dtype=np.int32)
    col_match = np.ascontiguousarray(col_match, dtype=np.int32)
    row_seen = np.zeros(max(len(row_match), 1), dtype=np.uint8)
    col_seen = np.zeros(max(len(col_match), 1), dtype=np.uint8)
    status = library.pag_alternating_reach(
        len(row_match), indptr.ctypes.data, indices.ctypes.data, row_match.ctypes.data,
        col_match.ctypes.data, row_seen.ctypes.data, col_seen.ctypes.data,
    )
    if status < 0:
        raise MemoryError("alternating_reach: out of memory in the compiled matcher")
    return row_seen[: len(row_match)].astype(bool), col_seen[: len(col_match)].astype(bool)
