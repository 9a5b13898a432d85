"""NormalsMeter: angular error of surface normals (Eigen & Fergus 2015; the paper's Table 6).

Prediction and ground truth are normalised, their dot product clamped to [-1, 1] and the
angle acos(.) taken in degrees. All valid pixels of the evaluation set are pooled: mean,
RMSE and the fractions within 11.25, 22.5 and 30 degrees come from exact sums and counts;
the median comes from a fixed-bin histogram of the angles (0 to 180 degrees in bins of
`bin_width` = 0.005 degrees, linear within the bin), exact to better than 0.01 degree and
mergeable across shards. A valid pixel whose prediction or ground truth has (near) zero
length has no direction and is an error.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from pag_model.metrics.inputs import check_finite, check_keys, check_ndim, check_same_shape, to_tensor

THRESHOLDS = (11.25, 22.5, 30.0)
_MIN_NORM = 1e-12


class NormalsMeter:
    """Pooled angular errors; compute() -> mean, median, rmse, within_11.25/22.5/30."""

    def __init__(self, bin_width: float = 0.005) -> None:
        """
        Args:
            bin_width: histogram bin width in degrees for the pooled median.
        """
        if not 0 < bin_width <= 1:
            raise ValueError(f"NormalsMeter: bin_width must be in (0, 1] degrees, got {bin_width}")
        self.bin_width = float(bin_width)
        self.num_bins = int(math.ceil(180.0 / self.bin_width))
        self.histogram = np.zeros(self.num_bins, dtype=np.int64)
        self.count = 0
        self.sum_angle = 0.0
        self.sum_sq_angle = 0.0
        self.within = np.zeros(len(THRESHOLDS), dtype=np.int64)

    def update(self, pred: Any, gt: Any, valid: Any) -> None:
        """Add a batch: pred (B, 3, H, W), gt (B, 3, H, W), valid (B, H, W) bool."""
        pred_t = to_tensor(pred, "pred")
        gt_t = to_tensor(gt, "gt", pred_t.device)
        valid_t = to_tensor(valid, "valid", pred_t.device)
        check_ndim(pred_t, 4, "pred", "(B, 3, H, W)")
        if pred_t.shape[1] != 3:
            raise ValueError(f"pred: expected 3 channels (B, 3, H, W), got {tuple(pred_t.shape)}")
        check_same_shape(pred_t, gt_t, "pred", "gt")
        if tuple(valid_t.shape) != (pred_t.shape[0],) + tuple(pred_t.shape[2:]):
            raise ValueError(f"valid: expected shape (B, H, W) = {(pred_t.shape[0],) + tuple(pred_t.shape[2:])}, got {tuple(valid_t.shape)}")
        if valid_t.dtype != torch.bool:
            raise TypeError(f"valid: expected a bool mask, got dtype {valid_t.dtype}")
        p = pred_t.permute(0, 2, 3, 1)[valid_t].double()
        g = gt_t.permute(0, 2, 3, 1)[valid_t].double()
        check_finite(p, "pred (valid pixels)")
        check_finite(g, "gt (valid pixels)")
        p_norm = p.norm(dim=1)
        g_norm = g.norm(dim=1)
        if p.shape[0] and float(p_norm.min()) < _MIN_NORM:
            raise ValueError("pred: a valid pixel has a zero-length normal; expected a direction")
        if g.shape[0] and float(g_norm.min()) < _MIN_NORM:
            raise ValueError("gt: a valid pixel has a zero-length normal; mark it invalid instead")
        cosine = ((p * g).sum(dim=1) / (p_norm * g_norm)).clamp(-1.0, 1.0)
        angle = torch.rad2deg(torch.acos(cosine))
        bins = (angle / self.bin_width).long().clamp(max=self.num_bins - 1)
        self.histogram += torch.bincount(bins, minlength=self.num_bins).cpu().numpy()
        self.count += int(angle.numel())
        self.sum_angle += angle.sum().item()
        self.sum_sq_angle += (angle * angle).sum().item()
        for k, threshold in enumerate(THRESHOLDS):
            self.within[k] += int((angle < threshold).sum())

    def merge(self, other: "NormalsMeter") -> "NormalsMeter":
        """Add another shard's histogram and sums; returns self."""
        if other.bin_width != self.bin_width:
            raise ValueError("NormalsMeter.merge: shards use different bin widths")
        self.histogram += other.histogram
        self.count += other.count
        self.sum_angle += other.sum_angle
        self.sum_sq_angle += other.sum_sq_angle
        self.within += other.within
        return self

    def state_dict(self) -> dict[str, Any]:
        """Plain data: bin width, histogram, count, sums and within-threshold counts."""
        return {
            "bin_width": self.bin_width,
            "histogram": self.histogram.copy(),
            "count": self.count,
            "sum_angle": self.sum_angle,
            "sum_sq_angle": self.sum_sq_angle,
            "within": self.within.copy(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "NormalsMeter":
        """Rebuild from `state_dict()` output."""
        check_keys(state, ("bin_width", "histogram", "count", "sum_angle", "sum_sq_angle", "within"), "NormalsMeter")
        meter = cls(state["bin_width"])
        histogram = np.asarray(state["histogram"], dtype=np.int64)
        if histogram.shape != (meter.num_bins,):
            raise ValueError(f"NormalsMeter.from_state: histogram has shape {histogram.shape}, expected ({meter.num_bins},)")
        meter.histogram = histogram.copy()
        meter.count = int(state["count"])
        meter.sum_angle = float(state["sum_angle"])
        meter.sum_sq_angle = float(state["sum_sq_angle"])
        meter.within = np.asarray(state["within"], dtype=np.int64).copy()
        return meter

    def _order_statistic(self, rank: int) -> float:
        """The angle of 0-based rank `rank`, placed uniformly inside its histogram bin."""
        cumulative = np.cumsum(self.histogram)
        b = int(np.searchsorted(cumulative, rank, side="right"))
        before = int(cumulative[b - 1]) if b > 0 else 0
        return (b + (rank - before + 0.5) / self.histogram[b]) * self.bin_width

    def _median(self) -> float:
        """numpy's median (mean of the two middle values for even counts), from the histogram."""
        low = (self.count - 1) // 2
        high = self.count // 2
        return 0.5 * (self._order_statistic(low) + self._order_statistic(high))

    def compute(self) -> dict[str, float]:
        """Angles in degrees; within_* are fractions in [0, 1]."""
        if self.count == 0:
            raise ValueError("NormalsMeter.compute: no valid pixels were seen (empty ground truth)")
        n = float(self.count)
        result = {
            "mean": self.sum_angle / n,
            "median": self._median(),
            "rmse": math.sqrt(self.sum_sq_angle / n),
        }
        for threshold, hits in zip(THRESHOLDS, self.within):
            result[f"within_{threshold:g}"] = float(hits) / n
        return result
