"""SegmentationMeter: confusion matrix, per-class IoU, mIoU and pixel accuracy.

Conventions (those of the NYUv2/2D-3D-S/Cityscapes evaluations the paper's Table 4 uses):
the confusion matrix (rows = ground truth, columns = prediction) counts every pixel whose
ground truth is not `ignore_index`, pooled over the whole evaluation set;
IoU_c = TP / (TP + FP + FN); mIoU is the mean over classes that occur in the ground truth
or the prediction (classes with TP + FP + FN = 0 report NaN and are left out); pixel
accuracy = sum TP / counted pixels. The matrix is accumulated with `torch.bincount` on the
device of the inputs (or `device`), so no pixel data leaves the GPU.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

from pag_model.metrics.inputs import (
    check_finite,
    check_integer,
    check_keys,
    check_ndim,
    check_same_shape,
    to_tensor,
)


def labels_from(pred: torch.Tensor, num_classes: int, name: str = "pred") -> torch.Tensor:
    """(B, H, W) labels from labels or from (B, C, H, W) scores (argmax over C)."""
    if pred.ndim == 4:
        if pred.shape[1] != num_classes:
            raise ValueError(f"{name}: scores have {pred.shape[1]} channels, expected {num_classes} classes")
        check_finite(pred, name)
        return pred.argmax(dim=1)
    check_ndim(pred, 3, name, "(B, H, W) labels or (B, C, H, W) scores")
    check_integer(pred, name)
    return pred


def confusion_update(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int,
) -> torch.Tensor:
    """(C, C) int64 confusion counts of one batch (rows = target, columns = pred)."""
    check_integer(target, "target")
    check_same_shape(pred, target, "pred", "target")
    valid = target != ignore_index
    t = target[valid].long()
    p = pred[valid].long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(
            f"target: labels span [{int(t.min())}, {int(t.max())}]; expected [0, {num_classes}) or {ignore_index}"
        )
    if p.numel() and (int(p.min()) < 0 or int(p.max()) >= num_classes):
        raise ValueError(f"pred: labels span [{int(p.min())}, {int(p.max())}]; expected [0, {num_classes})")
    flat = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


class SegmentationMeter:
    """Confusion-matrix accumulator; compute() -> {"miou", "pixel_acc", "iou/<class>"}."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        device: Optional[torch.device | str] = None,
        class_names: Optional[Sequence[str]] = None,
    ) -> None:
        """
        Args:
            num_classes: number of classes C; labels are 0..C-1.
            ignore_index: ground-truth label of pixels left out of every count.
            device: where the confusion matrix lives; None = the first batch's device.
            class_names: C names used in the metric keys; indices when None.
        """
        if num_classes < 1:
            raise ValueError(f"SegmentationMeter: num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"SegmentationMeter: {len(class_names)} class_names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
        self.device = torch.device(device) if device is not None else None
        self.confusion: Optional[torch.Tensor] = None

    def update(self, pred: Any, target: Any) -> None:
        """Add a batch: pred (B, H, W) labels or (B, C, H, W) scores; target (B, H, W) labels."""
        pred_t = to_tensor(pred, "pred", self.device)
        target_t = to_tensor(target, "target", pred_t.device)
        check_ndim(target_t, 3, "target", "(B, H, W)")
        labels = labels_from(pred_t, self.num_classes)
        batch = confusion_update(labels, target_t, self.num_classes, self.ignore_index)
        if self.confusion is None:
            self.confusion = batch
        else:
            self.confusion += batch.to(self.confusion.device)

    def matrix(self) -> np.ndarray:
        """(C, C) int64 confusion matrix on the host (rows = ground truth)."""
        if self.confusion is None:
            return np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        return self.confusion.cpu().numpy().astype(np.int64)

    def merge(self, other: "SegmentationMeter") -> "SegmentationMeter":
        """Add another shard's counts; returns self."""
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError("SegmentationMeter.merge: shards differ in num_classes or ignore_index")
        total = torch.from_numpy(self.matrix() + other.matrix())
        self.confusion = total.to(self.confusion.device) if self.confusion is not None else total
        return self

    def state_dict(self) -> dict[str, Any]:
        """Plain data: class count, ignore label, names and the confusion matrix."""
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "class_names": list(self.class_names),
            "confusion": self.matrix(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "SegmentationMeter":
        """Rebuild a meter (on the host) from `state_dict()` output."""
        check_keys(state, ("num_classes", "ignore_index", "class_names", "confusion"), "SegmentationMeter")
        meter = cls(state["num_classes"], state["ignore_index"], None, state["class_names"])
        confusion = np.asarray(state["confusion"], dtype=np.int64)
        if confusion.shape != (meter.num_classes, meter.num_classes):
            raise ValueError(f"SegmentationMeter.from_state: confusion has shape {confusion.shape}")
        meter.confusion = torch.from_numpy(confusion.copy())
        return meter

    def compute(self) -> dict[str, float]:
        """{"miou", "pixel_acc", "mean_acc", "iou/<class>"} (fractions in [0, 1])."""
        confusion = self.matrix().astype(np.float64)
        total = confusion.sum()
        if total == 0:
            raise ValueError("SegmentationMeter.compute: no labelled (non-ignored) pixels were seen")
        tp = np.diag(confusion)
        gt_count = confusion.sum(axis=1)
        union = gt_count + confusion.sum(axis=0) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            class_acc = np.where(gt_count > 0, tp / gt_count, np.nan)
        result = {
            "miou": float(np.nanmean(iou)),
            "pixel_acc": float(tp.sum() / total),
            "mean_acc": float(np.nanmean(class_acc)),
        }
        for name, value in zip(self.class_names, iou):
            result[f"iou/{name}"] = float(value)
        return result
