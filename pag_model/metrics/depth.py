"""DepthMeter: threshold accuracy and error metrics of monocular depth (Eigen et al. 2014).

Definitions over valid pixels, g = ground truth and p = prediction in metres:
delta_k = fraction with max(g/p, p/g) < 1.25^k (k = 1, 2, 3; the paper's Table 5),
abs_rel = mean |g - p| / g, sq_rel = mean (g - p)^2 / g, rmse = sqrt(mean (g - p)^2),
rmse_log = sqrt(mean (ln g - ln p)^2), log10 = mean |log10 g - log10 p|.

Pooling: every valid pixel of the evaluation set counts once (sums over all pixels, then
one division), the NYUv2 convention of Eigen et al.'s released evaluation that the paper's
table compares with; it is also what makes shards merge exactly. Predictions are clamped
to [min_depth, max_depth] first, as the Eigen/Laina evaluation scripts clip them, so the
logarithms are defined. Which pixels are valid is the caller's `valid` mask (dataset
rules in METRICS.md); a valid pixel with ground truth <= 0 is an error.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from pag_model.metrics.inputs import check_finite, check_keys, check_ndim, check_same_shape, to_tensor

SUM_KEYS = ("delta1", "delta2", "delta3", "abs_rel", "sq_rel", "sq_err", "sq_log_err", "abs_log10_err")


class DepthMeter:
    """Pooled depth metrics; compute() -> delta1..3, abs_rel, sq_rel, rmse, rmse_log, log10."""

    def __init__(
        self,
        min_depth: float = 1e-3,
        max_depth: Optional[float] = None,
    ) -> None:
        """
        Args:
            min_depth: predictions below this are clamped up to it (metres, > 0).
            max_depth: predictions above this are clamped down to it; None = no upper clamp.
        """
        if not min_depth > 0:
            raise ValueError(f"DepthMeter: min_depth must be > 0, got {min_depth}")
        if max_depth is not None and max_depth <= min_depth:
            raise ValueError(f"DepthMeter: max_depth {max_depth} must exceed min_depth {min_depth}")
        self.min_depth = float(min_depth)
        self.max_depth = None if max_depth is None else float(max_depth)
        self.count = 0
        self.sums = {key: 0.0 for key in SUM_KEYS}

    def update(self, pred: Any, gt: Any, valid: Any) -> None:
        """Add a batch: pred (B, H, W) metres, gt (B, H, W) metres, valid (B, H, W) bool."""
        pred_t = to_tensor(pred, "pred")
        gt_t = to_tensor(gt, "gt", pred_t.device)
        valid_t = to_tensor(valid, "valid", pred_t.device)
        check_ndim(pred_t, 3, "pred", "(B, H, W)")
        check_same_shape(pred_t, gt_t, "pred", "gt")
        check_same_shape(pred_t, valid_t, "pred", "valid")
        if valid_t.dtype != torch.bool:
            raise TypeError(f"valid: expected a bool mask, got dtype {valid_t.dtype}")
        p = pred_t[valid_t].double()
        g = gt_t[valid_t].double()
        check_finite(p, "pred (valid pixels)")
        check_finite(g, "gt (valid pixels)")
        if g.numel() and float(g.min()) <= 0:
            raise ValueError(f"gt: valid pixels must have depth > 0, found minimum {float(g.min())}")
        p = p.clamp(min=self.min_depth, max=self.max_depth)
        ratio = torch.maximum(g / p, p / g)
        diff = g - p
        log_diff = torch.log(g) - torch.log(p)
        batch = {
            "delta1": (ratio < 1.25).sum(),
            "delta2": (ratio < 1.25**2).sum(),
            "delta3": (ratio < 1.25**3).sum(),
            "abs_rel": (diff.abs() / g).sum(),
            "sq_rel": (diff * diff / g).sum(),
            "sq_err": (diff * diff).sum(),
            "sq_log_err": (log_diff * log_diff).sum(),
            "abs_log10_err": (torch.log10(g) - torch.log10(p)).abs().sum(),
        }
        for key, value in batch.items():
            self.sums[key] += value.item()
        self.count += int(g.numel())

    def merge(self, other: "DepthMeter") -> "DepthMeter":
        """Add another shard's sums; returns self."""
        self.count += other.count
        for key in SUM_KEYS:
            self.sums[key] += other.sums[key]
        return self

    def state_dict(self) -> dict[str, Any]:
        """Plain python: settings, pixel count and sums."""
        return {"min_depth": self.min_depth, "max_depth": self.max_depth, "count": self.count, "sums": dict(self.sums)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "DepthMeter":
        """Rebuild from `state_dict()` output."""
        check_keys(state, ("min_depth", "max_depth", "count", "sums"), "DepthMeter")
        meter = cls(state["min_depth"], state["max_depth"])
        check_keys(state["sums"], SUM_KEYS, "DepthMeter sums")
        meter.count = int(state["count"])
        meter.sums = {key: float(state["sums"][key]) for key in SUM_KEYS}
        return meter

    def compute(self) -> dict[str, float]:
        """Pooled metrics; deltas are fractions in [0, 1]."""
        if self.count == 0:
            raise ValueError("DepthMeter.compute: no valid pixels were seen (empty ground truth)")
        n = float(self.count)
        s = self.sums
        return {
            "delta1": s["delta1"] / n,
            "delta2": s["delta2"] / n,
            "delta3": s["delta3"] / n,
            "abs_rel": s["abs_rel"] / n,
            "sq_rel": s["sq_rel"] / n,
            "rmse": float(np.sqrt(s["sq_err"] / n)),
            "rmse_log": float(np.sqrt(s["sq_log_err"] / n)),
            "log10": s["abs_log10_err"] / n,
        }
