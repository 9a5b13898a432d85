"""Per-image boundary counts over thresholds, as the BSDS `edgesEvalImg` computes them.

For each threshold t_k (99 of them, t_k = k / 100): E1 = thin(E >= max(eps, t_k)); each
human annotation g is matched one-to-one with E1 (`correspond_pixels`); then

- cntR(k) = sum over annotators of matched annotated pixels, sumR(k) = sum of their sizes
  (recall sums over annotators),
- cntP(k) = number of predicted pixels matched in ANY annotation, sumP(k) = |E1|
  (precision uses the union over annotators).

An annotator map with no boundary pixels adds nothing to cntR/sumR, as in the benchmark
(the image then contributes only to precision); an image needs at least one annotator.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.spatial import cKDTree

from pag_model.metrics.boundary_nms import HED_NMS, NmsReference, prepare_edges
from pag_model.metrics.correspond import MAX_DIST, candidate_pairs, match_pairs, radius_for
from pag_model.metrics.thinning import thin

NUM_THRESHOLDS = 99
# Column order of the per-image count arrays (K, 4), as in the benchmark's _ev1.txt files.
COUNT_COLUMNS = ("cntR", "sumR", "cntP", "sumP")
_EPS = np.finfo(np.float64).eps


def benchmark_thresholds(count: int = NUM_THRESHOLDS) -> np.ndarray:
    """The benchmark's K thresholds, MATLAB's `linspace(1/(K+1), 1-1/(K+1), K)`, float64 (K,).

    Computed as MATLAB does, d1 + (0:K-1) .* (d2 - d1) / (K - 1) with the last set to d2,
    so that maps read back from 8-bit PNGs compare with them bit for bit.
    """
    if count < 1:
        raise ValueError(f"benchmark_thresholds: expected at least 1 threshold, got {count}")
    low, high = 1.0 / (count + 1), 1.0 - 1.0 / (count + 1)
    if count == 1:
        return np.array([high])
    values = low + (np.arange(count) * (high - low)) / (count - 1)
    values[-1] = high
    return values


def check_boundary_inputs(prob: np.ndarray, annotations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Validate one image's inputs; return the annotations as (H, W) bool maps."""
    if prob.ndim != 2:
        raise ValueError(f"boundary prediction: expected an (H, W) map, got shape {prob.shape}")
    if not np.issubdtype(prob.dtype, np.floating):
        raise TypeError(f"boundary prediction: expected floating probabilities, got dtype {prob.dtype}")
    if not np.isfinite(prob).all():
        raise ValueError("boundary prediction: contains NaN or infinite values; expected values in [0, 1]")
    if prob.size and (prob.min() < 0.0 or prob.max() > 1.0):
        raise ValueError(
            f"boundary prediction: values span [{prob.min():.4g}, {prob.max():.4g}]; expected [0, 1]"
        )
    if len(annotations) == 0:
        raise ValueError("boundary annotations: got no annotator maps; expected at least one (H, W) map")
    maps = []
    for index, annotation in enumerate(annotations):
        annotation = np.asarray(annotation)
        if annotation.shape != prob.shape:
            raise ValueError(
                f"boundary annotation {index}: shape {annotation.shape} differs from the prediction's {prob.shape}"
            )
        if annotation.dtype != bool and not np.isin(annotation, (0, 1)).all():
            raise ValueError(f"boundary annotation {index}: expected a binary map (0/1 or bool)")
        maps.append(annotation.astype(bool))
    return maps


def boundary_counts(
    prob: np.ndarray,
    annotations: Sequence[np.ndarray],
    thresholds: np.ndarray | None = None,
    max_dist: float = MAX_DIST,
    nms: bool = True,
    quantize: bool = True,
    nms_reference: NmsReference = HED_NMS,
) -> np.ndarray:
    """Counts of one image at every threshold.

    Args:
        prob: (H, W) boundary probability map in [0, 1].
        annotations: K (H, W) binary human boundary maps.
        thresholds: (T,) thresholds; the benchmark's 99 by default.
        max_dist: matching tolerance as a fraction of the image diagonal.
        nms: prepare the map with the reference's non-maximum suppression first.
        quantize: round to 8 bits where the reference's PNG files do.
        nms_reference: which published NMS to follow (`HED_NMS` or `RCF_NMS`).

    Returns:
        (T, 4) int64 array with columns cntR, sumR, cntP, sumP.
    """
    prob = np.asarray(prob)
    gts = check_boundary_inputs(prob, annotations)
    thresholds = benchmark_thresholds() if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    edges = prepare_edges(prob, nms=nms, quantize=quantize, reference=nms_reference).astype(np.float64)
    radius = radius_for(prob.shape, max_dist)
    # Every thresholded map lies inside the support E > 0: find the candidate pairs of the
    # support once per annotator, then keep those of each threshold's pixels.
    support = np.argwhere(edges > 0)
    support_id = np.full(prob.shape, -1, dtype=np.int64)
    support_id[support[:, 0], support[:, 1]] = np.arange(len(support))
    support_tree = cKDTree(support) if len(support) else None
    annotators = []
    for gt in gts:
        points = np.argwhere(gt)
        if len(points) and support_tree is not None:
            pairs = candidate_pairs(support, points, radius, gt_tree=cKDTree(points), pred_tree=support_tree)
        else:
            pairs = (np.zeros(0, np.int64),) * 3
        annotators.append((len(points), pairs))
    sum_r = sum(n for n, _ in annotators)
    counts = np.zeros((len(thresholds), 4), dtype=np.int64)
    position = np.full(len(support), -1, dtype=np.int64)
    for k, threshold in enumerate(thresholds):
        pred_points = np.argwhere(thin(edges >= max(_EPS, threshold)))
        ids = support_id[pred_points[:, 0], pred_points[:, 1]]
        position[ids] = np.arange(len(ids))
        matched_pred = np.zeros(len(pred_points), dtype=bool)
        cnt_r = 0
        for n_gt, (i_all, j_all, d2_all) in annotators:
            local = position[i_all]
            keep = local >= 0
            if not keep.any():
                continue
            pred_to_gt, gt_to_pred = match_pairs(local[keep], j_all[keep], d2_all[keep], len(pred_points), n_gt)
            matched_pred |= pred_to_gt >= 0
            cnt_r += int((gt_to_pred >= 0).sum())
        position[ids] = -1
        counts[k] = (cnt_r, sum_r, int(matched_pred.sum()), len(pred_points))
    return counts
