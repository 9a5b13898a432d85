"""Fast exact matcher: Dulmage-Mendelsohn split, then compiled full matchings.

The benchmark's matching is a minimum-cost matching among the maximum-cardinality ones.
A maximum matching (Hopcroft-Karp, compiled) splits the graph (Dulmage-Mendelsohn /
Gallai-Edmonds): H = rows reachable from an unmatched row by alternating paths with the
columns they reach, V = columns reachable from an unmatched column with the rows they
reach, S = the rest. Every maximum matching matches all of H's columns inside H, all of
V's rows inside V and S perfectly, and uses no edge between parts. So the minimum-cost
maximum matching is the union of three minimum-cost *full* matchings: S and V with their
rows saturated, H transposed (its columns saturated). They are solved together as one
row-saturating problem by the compiled successive-shortest-path solver, whose every
search ends at a nearby free column (no large outlier costs to explore around).
"""
from __future__ import annotations

import numpy as np
from pag_model.metrics.assign_native import alternating_reach, assign_full, max_matching

COST_SCALE = 100


def _compact(index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(present ids ascending, each entry's position among them): np.unique without sorting."""
    present = np.bincount(index, minlength=n) > 0
    lookup = np.cumsum(present) - 1
    return np.flatnonzero(present), lookup[index]


def _csr(rows: np.ndarray, cols: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR pointers and edge order for edges given as (rows, cols); keeps zero costs."""
    if len(rows) < 2 or bool((rows[1:] >= rows[:-1]).all()):
        order = np.arange(len(rows))
    elif n_rows < 2**15:
        order = np.argsort(rows.astype(np.int16), kind="stable")  # radix sort, O(E)
    else:
        order = np.argsort(rows, kind="stable")
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr, order


def match_pairs_native(
    i: np.ndarray,
    j: np.ndarray,
    d2: np.ndarray,
    n_pred: int,
    n_gt: int,
) -> tuple[np.ndarray, np.ndarray]:
    """`correspond.match_pairs` through the decomposition and the compiled solver."""
    pred_to_gt = np.full(n_pred, -1, dtype=np.int64)
    gt_to_pred = np.full(n_gt, -1, dtype=np.int64)
    if len(i) == 0:
        return pred_to_gt, gt_to_pred
    rows, il = _compact(i, n_pred)
    cols, jl = _compact(j, n_gt)
    n_r, n_c = len(rows), len(cols)
    cost = np.rint(np.sqrt(d2) * COST_SCALE).astype(np.int64)

    indptr, order = _csr(il, jl, n_r)
    row_match, col_match = max_matching(indptr, jl[order], n_c)
    if (row_match >= 0).all() or (col_match >= 0).all():
        # One side is saturated: H (or V) is empty and the whole graph is one full
        # matching problem on that side, cross-part edges being unusable by any full
        # matching. Solve it with the saturated side as rows.
        if (row_match >= 0).all():
            assigned = assign_full(indptr, jl[order], cost[order], n_c).astype(np.int64)
            pred_local, gt_local = np.arange(n_r), assigned
        else:
            t_indptr, t_order = _csr(jl, il, n_c)
            assigned = assign_full(t_indptr, il[t_order], cost[t_order], n_r).astype(np.int64)
            pred_local, gt_local = assigned, np.arange(n_c)
        pred_to_gt[rows[pred_local]] = cols[gt_local]
        gt_to_pred[cols[gt_local]] = rows[pred_local]
        return pred_to_gt, gt_to_pred
    t_indptr, t_order = _csr(jl, il, n_c)
    h_row, h_col = alternating_reach(indptr, jl[order], row_match, col_match)
    v_col, v_row = alternating_reach(t_indptr, il[t_order], col_match, row_match)
    s_row, s_col = ~(h_row | v_row), ~(h_col | v_col)
    keep_a = (s_row[il] & s_col[jl]) | (v_row[il] & v_col[jl])
    keep_h = h_row[il] & h_col[jl]

    # Problem rows: S and V rows (as themselves), then H columns; problem columns: S and V
    # columns, then H rows.
    a_rows = np.flatnonzero(~h_row)
    b_rows = np.flatnonzero(h_col)
    a_cols = np.flatnonzero(~h_col)
    b_cols = np.flatnonzero(h_row)
    row_id = np.full(n_r + n_c, -1, dtype=np.int64)
    row_id[a_rows] = np.arange(len(a_rows))
    row_id[n_r + b_rows] = len(a_rows) + np.arange(len(b_rows))
    col_id = np.full(n_r + n_c, -1, dtype=np.int64)
    col_id[n_r + a_cols] = np.arange(len(a_cols))
    col_id[b_cols] = len(a_cols) + np.arange(len(b_cols))
    p_rows = np.concatenate([row_id[il[keep_a]], row_id[n_r + jl[keep_h]]])
    p_cols = np.concatenate([col_id[n_r + jl[keep_a]], col_id[il[keep_h]]])
    p_cost = np.concatenate([cost[keep_a], cost[keep_h]])
    n_rows = len(a_rows) + len(b_rows)
    indptr, order = _csr(p_rows, p_cols, n_rows)
    assigned = assign_full(indptr, p_cols[order], p_cost[order], len(a_cols) + len(b_cols)).astype(np.int64)

    # Back to (pred, gt) pairs: A rows are preds matched to columns; B rows are gts.
    a_pred = a_rows
    a_gt = a_cols[assigned[: len(a_rows)]]
    b_gt = b_rows
    b_pred = b_cols[assigned[len(a_rows):] - len(a_cols)]
    # A rows in S or V are all matched; rows of V matched outside V never happen (no edges kept).
    pred_local = np.concatenate([a_pred, b_pred])
    gt_local = np.concatenate([a_gt, b_gt])
    pred_to_gt[rows[pred_local]] = cols[gt_local]
    gt_to_pred[cols[gt_local]] = rows[pred_local]
    return pred_to_gt, gt_to_pred
