"""ODS, OIS, AP and the precision-recall curve from per-image counts (BSDS `edgesEvalDir`).

Follows `edgesEvalDir.m` of Dollar's structured-edge toolbox, which reproduces the BSDS500
`boundaryBench` numbers (and is what HED/RCF report):

- R = cntR / max(eps, sumR), P = cntP / max(eps, sumP), F = 2PR / max(eps, P + R).
- ODS: counts summed over images per threshold; F is maximised over 100 linear
  interpolation steps between each pair of neighbouring thresholds (`findBestRPF`).
- OIS: per image, the threshold of largest (non-interpolated) F; those counts are summed
  over images and give R, P, F.
- AP: dataset-level (R, P) with duplicate recalls removed (first occurrence, MATLAB's
  `unique`), P linearly interpolated at recall 0:0.01:1, values outside the recall range
  dropped, the sum divided by 100 (the benchmark's own normalisation).
- R50: recall at 50% precision (interpolated), NaN when the curve never reaches it.
"""
from __future__ import annotations

import numpy as np

_EPS = np.finfo(np.float64).eps


def rpf(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`computeRPF`: recall, precision, F from counts (..., 4) = cntR, sumR, cntP, sumP."""
    counts = np.asarray(counts, dtype=np.float64)
    recall = counts[..., 0] / np.maximum(_EPS, counts[..., 1])
    precision = counts[..., 2] / np.maximum(_EPS, counts[..., 3])
    f = 2 * precision * recall / np.maximum(_EPS, precision + recall)
    return recall, precision, f


def best_interpolated(
    thresholds: np.ndarray,
    recall: np.ndarray,
    precision: np.ndarray,
) -> tuple[float, float, float, float]:
    """`findBestRPF`: the best F along the piecewise-linear curve; returns (R, P, F, T)."""
    if len(thresholds) == 1:
        f = 2 * precision[0] * recall[0] / max(_EPS, precision[0] + recall[0])
        return float(recall[0]), float(precision[0]), float(f), float(thresholds[0])
    a = np.linspace(0.0, 1.0, 100)[None, :]
    b = 1.0 - a
    r = recall[1:, None] * a + recall[:-1, None] * b
    p = precision[1:, None] * a + precision[:-1, None] * b
    t = thresholds[1:, None] * a + thresholds[:-1, None] * b
    f = 2.0 * p * r / np.maximum(_EPS, p + r)
    # Row-major argmax = the MATLAB loop's first strict improvement.
    j, k = np.unravel_index(int(np.argmax(f)), f.shape)
    return float(r[j, k]), float(p[j, k]), float(f[j, k]), float(t[j, k])


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """The benchmark's AP: mean of P interpolated at recall 0:0.01:1 (sum / 100)."""
    unique_r, first = np.unique(recall, return_index=True)
    if len(unique_r) <= 1:
        return 0.0
    grid = np.arange(101) / 100.0
    inside = (grid >= unique_r[0]) & (grid <= unique_r[-1])
    return float(np.interp(grid[inside], unique_r, precision[first]).sum() / 100.0)


def recall_at_half_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """R50 of `edgesEvalDir`, on the curve after the AP step's duplicate-recall removal."""
    unique_r, first = np.unique(recall, return_index=True)
    # edgesEvalDir has the curve in descending recall at this point.
    r_desc = unique_r[::-1]
    p_desc = precision[first][::-1]
    unique_p, first_p = np.unique(p_desc, return_index=True)
    r_curve = r_desc[first_p]
    query = max(unique_p[0], 0.5)
    if query > unique_p[-1]:
        return float("nan")
    return float(np.interp(query, unique_p, r_curve))


def boundary_scores(counts: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """ODS/OIS/AP and companions from per-image counts.

    Args:
        counts: (N, T, 4) per-image counts (cntR, sumR, cntP, sumP) at T thresholds.
        thresholds: (T,) the thresholds, ascending.

    Returns:
        {"ods_f", "ods_p", "ods_r", "ods_t", "ois_f", "ois_p", "ois_r", "ap", "r50"}.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 3 or counts.shape[2] != 4 or counts.shape[1] != len(thresholds):
        raise ValueError(
            f"boundary_scores: expected counts (N, {len(thresholds)}, 4), got {counts.shape}"
        )
    if counts.shape[0] == 0:
        raise ValueError("boundary_scores: no images were evaluated")
    total = counts.sum(axis=0)
    recall, precision, _ = rpf(total)
    ods_r, ods_p, ods_f, ods_t = best_interpolated(np.asarray(thresholds, np.float64), recall, precision)
    _, _, f_image = rpf(counts)
    best = np.argmax(f_image, axis=1)
    ois_counts = counts[np.arange(counts.shape[0]), best].sum(axis=0)
    ois_r, ois_p, ois_f = (float(v) for v in rpf(ois_counts))
    return {
        "ods_f": ods_f,
        "ods_p": ods_p,
        "ods_r": ods_r,
        "ods_t": ods_t,
        "ois_f": ois_f,
        "ois_p": ois_p,
        "ois_r": ois_r,
        "ap": average_precision(recall, precision),
        "r50": recall_at_half_precision(recall, precision),
    }


def pr_curve(counts: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """Dataset-level curve: {"thresholds", "recall", "precision", "f"}, each (T,)."""
    recall, precision, f = rpf(np.asarray(counts, dtype=np.float64).sum(axis=0))
    return {
        "thresholds": np.asarray(thresholds, dtype=np.float64).copy(),
        "recall": recall,
        "precision": precision,
        "f": f,
    }
