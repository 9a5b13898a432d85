"""One-to-one matching of predicted to annotated boundary pixels (BSDS `correspondPixels`).

The BSDS benchmark (Martin, Fowlkes & Malik, PAMI 2004; `match.cc` in the BSDS500 code)
matches the pixels of a thinned predicted boundary map to the pixels of one human
boundary map within maxDist = 0.0075 x the image diagonal. It solves an assignment
problem: a real pair (p, g) within maxDist costs rint(100 * |p - g|), leaving a pixel
unmatched costs the outlier cost (100 x maxDist, far larger than any pair), so the
matching has the largest possible number of pairs and, among those, the smallest total
integer cost. The benchmark solves it with CSA on a sparse graph with random outlier
edges; here the same optimum is found exactly.

Reduction used: with the smaller side S (n_s matchable pixels) as rows and the larger side
L plus one private "unmatched" slot per S pixel as columns, edges are the real pairs
(cost c + 1) and each S pixel to its own slot (cost P). Every matching of k real pairs is
a full matching of S costing sum(c + 1) + P (n_s - k), so with P above any sum of pair
costs the minimum-weight full matching (scipy's LAPJVsp,
`min_weight_full_bipartite_matching`) is the benchmark's optimum: most pairs, then the
smallest total integer cost. That scipy path is the reference; `match_pairs` uses the
compiled solver of `matching_native` (same optimum, found about an order of magnitude
faster) whenever it is available.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

from pag_model.metrics.assign_native import native_library
from pag_model.metrics.matching_native import match_pairs_native

MAX_DIST = 0.0075
# The benchmark scales distances by 100 and rounds them to integers for its solver.
COST_SCALE = 100


def radius_for(shape: tuple[int, int], max_dist: float = MAX_DIST) -> float:
    """Matching radius in pixels: `max_dist` x the diagonal of an image of `shape` (H, W)."""
    return max_dist * math.hypot(shape[0], shape[1])


def candidate_pairs(
    pred_yx: np.ndarray,
    gt_yx: np.ndarray,
    radius: float,
    gt_tree: cKDTree | None = None,
    pred_tree: cKDTree | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (pred, gt) index pairs with squared distance <= radius**2.

    Args:
        pred_yx: (N1, 2) integer pixel coordinates of predicted boundary pixels.
        gt_yx: (N2, 2) integer pixel coordinates of annotated boundary pixels.
        radius: matching radius in pixels.
        gt_tree: a `cKDTree` over `gt_yx`, to reuse across thresholds.
        pred_tree: a `cKDTree` over `pred_yx`, to reuse across annotators.

    Returns:
        (i, j, d2): pred indices (ascending), gt indices and integer squared distances, each (E,).
    """
    empty = np.zeros(0, dtype=np.int64)
    if len(pred_yx) == 0 or len(gt_yx) == 0:
        return empty, empty, empty
    gt_tree = gt_tree if gt_tree is not None else cKDTree(gt_yx)
    pred_tree = pred_tree if pred_tree is not None else cKDTree(pred_yx)
    # A small slack so that pairs at exactly the radius survive the float search; the
    # exact integer test below is the benchmark's `d2 > maxDist^2 -> skip`.
    found = pred_tree.sparse_distance_matrix(gt_tree, radius + 1e-6, output_type="ndarray")
    i = found["i"].astype(np.int64)
    j = found["j"].astype(np.int64)
    diff = pred_yx[i].astype(np.int64) - gt_yx[j].astype(np.int64)
    d2 = (diff * diff).sum(axis=1)
    # Sorted by predicted pixel, so per-row (CSR) layouts need no further sort.
    keep = np.flatnonzero(d2 <= radius * radius)
    keep = keep[np.argsort(i[keep], kind="stable")]
    return i[keep], j[keep], d2[keep]


def match_pairs(
    i: np.ndarray,
    j: np.ndarray,
    d2: np.ndarray,
    n_pred: int,
    n_gt: int,
    native: Optional[bool] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-cardinality, then minimum-cost, one-to-one matching over candidate pairs.

    Args:
        i: (E,) predicted-pixel index of each candidate pair.
        j: (E,) annotated-pixel index of each candidate pair.
        d2: (E,) integer squared distance of each pair.
        n_pred: number of predicted pixels.
        n_gt: number of annotated pixels.
        native: use the compiled solver (True), scipy's LAPJVsp (False), or the compiled
            one when it is available (None).

    Returns:
        (pred_to_gt, gt_to_pred): (n_pred,) and (n_gt,) int arrays, the partner's index
        or -1 when unmatched.
    """
    if native is None:
        native = native_library() is not None
    if native:
        return match_pairs_native(i, j, d2, n_pred, n_gt)
    return match_pairs_reference(i, j, d2, n_pred, n_gt)


def match_pairs_reference(
    i: np.ndarray,
    j: np.ndarray,
    d2: np.ndarray,
    n_pred: int,
    n_gt: int,
) -> tuple[np.ndarray, np.ndarray]:
    """`match_pairs` with scipy's LAPJVsp on the outlier-slot graph (the oracle path)."""
    pred_to_gt = np.full(n_pred, -1, dtype=np.int64)
    gt_to_pred = np.full(n_gt, -1, dtype=np.int64)
    if len(i) == 0:
        return pred_to_gt, gt_to_pred
    # Only matchable pixels enter the assignment, as in the benchmark.
    rows, i_local = np.unique(i, return_inverse=True)
    cols, j_local = np.unique(j, return_inverse=True)
    cost = np.rint(np.sqrt(d2) * COST_SCALE).astype(np.int64) + 1
    # The solver is fastest with the smaller side as the rows that must all be placed.
    if len(cols) < len(rows):
        small, small_local, large, large_local = cols, j_local, rows, i_local
    else:
        small, small_local, large, large_local = rows, i_local, cols, j_local
    n_small, n_large = len(small), len(large)
    penalty = (n_small + 1) * (int(cost.max()) + 1) + 1
    own = np.arange(n_small)
    r = np.concatenate([small_local, own])
    c = np.concatenate([large_local, n_large + own])
    w = np.concatenate([cost, np.full(n_small, penalty, dtype=np.int64)]).astype(np.float64)
    graph = coo_matrix((w, (r, c)), shape=(n_small, n_large + n_small)).tocsr()
    row_ind, col_ind = min_weight_full_bipartite_matching(graph)
    real = col_ind < n_large
    hit_small = small[row_ind[real]]
    hit_large = large[col_ind[real]]
    if small is rows:
        pred_to_gt[hit_small] = hit_large
        gt_to_pred[hit_large] = hit_small
    else:
        gt_to_pred[hit_small] = hit_large
        pred_to_gt[hit_large] = hit_small
    return pred_to_gt, gt_to_pred


def correspond_pixels(
    pred: np.ndarray,
    gt: np.ndarray,
    max_dist: float = MAX_DIST,
) -> tuple[np.ndarray, np.ndarray]:
    """Match a binary predicted boundary map to one annotated map, as `correspondPixels`.

    Args:
        pred: (H, W) binary predicted boundary map (already thinned).
        gt: (H, W) binary annotated boundary map.
        max_dist: matching tolerance as a fraction of the image diagonal.

    Returns:
        (match_pred, match_gt): (H, W) bool maps of the matched pixels of each map.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(
            f"correspond_pixels: expected two (H, W) maps of one shape, got {pred.shape} and {gt.shape}"
        )
    pred_yx = np.argwhere(pred)
    gt_yx = np.argwhere(gt)
    i, j, d2 = candidate_pairs(pred_yx, gt_yx, radius_for(pred.shape, max_dist))
    pred_to_gt, gt_to_pred = match_pairs(i, j, d2, len(pred_yx), len(gt_yx))
    match_pred = np.zeros(pred.shape, dtype=bool)
    match_gt = np.zeros(gt.shape, dtype=bool)
    hit_p = pred_yx[pred_to_gt >= 0]
    hit_g = gt_yx[gt_to_pred >= 0]
    match_pred[hit_p[:, 0], hit_p[:, 1]] = True
    match_gt[hit_g[:, 0], hit_g[:, 1]] = True
    return match_pred, match_gt
