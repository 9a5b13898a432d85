"""CityscapesIIoU: instance-level IoU (iIoU) as `evalPixelLevelSemanticLabeling.py` computes it.

Cityscapes (Cordts et al., CVPR 2016; cityscapesScripts) weights each ground-truth
instance of the 8 evaluated instance classes so that large and small objects count alike:
for an instance of class c with s pixels, its TP (pixels predicted c) and FN are weighted by
avg_size(c) / s, with the official per-class average sizes below. FP are the unweighted
pixels predicted c whose ground truth is another evaluated class (ignored pixels excluded).
iIoU_c = wTP / (wTP + FP + wFN); the reported iIoU is the mean over classes with a
defined value.

The official evaluator also reports categories (flat, construction, object, nature, sky,
human, vehicle; void has no evaluated class): category IoU from the confusion matrix with a
category's classes merged (TP = ground truth and prediction both in the category, FN = the
rest of its ground truth, FP = other evaluated ground truth predicted in the category), and
category iIoU for the two categories whose classes all have instances (human, vehicle):
an instance's pixels predicted anywhere in its category are TP, weighted as above by its
class's average size, FP as for category IoU. Both averages are over categories with a
defined value (`getScoreAverage`). Instances are read from the `*_instanceIds.png` encoding: id = labelId x 1000
+ k for instances (id > 1000), plain labelId for stuff and crowd regions (not instances).
Predictions and semantic ground truth are in train ids (0..18, 255 = ignore).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from pag_model.metrics.inputs import check_integer, check_keys, check_ndim, check_same_shape, to_tensor

# cityscapesScripts evalPixelLevelSemanticLabeling.py, args.avgClassSize (pixels).
AVERAGE_INSTANCE_SIZE = {
    "person": 3462.4756337644,
    "rider": 3930.4788056518,
    "car": 12794.0202738185,
    "truck": 27855.1264367816,
    "bus": 35732.1511111111,
    "train": 67583.7075812274,
    "motorcycle": 6298.7200839748,
    "bicycle": 4672.3249222261,
}
# labelId -> (trainId, name) of the evaluated instance classes (cityscapesscripts labels.py);
# caravan (29) and trailer (30) have instances but are ignored in evaluation.
INSTANCE_CLASSES = {
    24: (11, "person"),
    25: (12, "rider"),
    26: (13, "car"),
    27: (14, "truck"),
    28: (15, "bus"),
    31: (16, "train"),
    32: (17, "motorcycle"),
    33: (18, "bicycle"),
}
NUM_TRAIN_CLASSES = 19
IGNORE_INDEX = 255
# Category -> train ids of its evaluated classes (cityscapesscripts labels.py, `category`).
CATEGORIES = {
    "flat": (0, 1),
    "construction": (2, 3, 4),
    "object": (5, 6, 7),
    "nature": (8, 9),
    "sky": (10,),
    "human": (11, 12),
    "vehicle": (13, 14, 15, 16, 17, 18),
}
INSTANCE_CATEGORIES = ("human", "vehicle")
_CATEGORY_OF = {t: c for c, ids in CATEGORIES.items() for t in ids}


class CityscapesIIoU:
    """Cityscapes' instance and category scores.

    compute() -> {"iiou", "iiou/<class>", "category_iou", "category_iou/<category>",
    "category_iiou", "category_iiou/<category>"}.
    """

    def __init__(self, device: Optional[torch.device | str] = None) -> None:
        """
        Args:
            device: where per-batch counting runs; None = the inputs' device.
        """
        self.device = torch.device(device) if device is not None else None
        self.weighted_tp = np.zeros(NUM_TRAIN_CLASSES, dtype=np.float64)
        self.weighted_fn = np.zeros(NUM_TRAIN_CLASSES, dtype=np.float64)
        self.false_pos = np.zeros(NUM_TRAIN_CLASSES, dtype=np.int64)
        self.instances = np.zeros(NUM_TRAIN_CLASSES, dtype=np.int64)
        self.confusion = np.zeros((NUM_TRAIN_CLASSES, NUM_TRAIN_CLASSES), dtype=np.int64)
        self.category_weighted_tp = np.zeros(len(INSTANCE_CATEGORIES), dtype=np.float64)
        self.category_weighted_fn = np.zeros(len(INSTANCE_CATEGORIES), dtype=np.float64)

    def update(self, pred: Any, target: Any, instance_ids: Any) -> None:
        """Add a batch.

        Args:
            pred: (B, H, W) predicted train ids.
            target: (B, H, W) ground-truth train ids (255 = ignore).
            instance_ids: (B, H, W) Cityscapes instance ids (labelId x 1000 + k).
        """
        pred_t = to_tensor(pred, "pred", self.device)
        target_t = to_tensor(target, "target", pred_t.device)
        inst_t = to_tensor(instance_ids, "instance_ids", pred_t.device)
        for name, tensor in (("pred", pred_t), ("target", target_t), ("instance_ids", inst_t)):
            check_ndim(tensor, 3, name, "(B, H, W)")
            check_integer(tensor, name)
        check_same_shape(pred_t, target_t, "pred", "target")
        check_same_shape(pred_t, inst_t, "pred", "instance_ids")
        pred_t = pred_t.long()
        target_t = target_t.long()
        evaluated = (target_t != IGNORE_INDEX) & (target_t >= 0) & (target_t < NUM_TRAIN_CLASSES)
        wrong = evaluated & (pred_t != target_t) & (pred_t >= 0) & (pred_t < NUM_TRAIN_CLASSES)
        self.false_pos += torch.bincount(pred_t[wrong], minlength=NUM_TRAIN_CLASSES).cpu().numpy()
        counted = evaluated & (pred_t >= 0) & (pred_t < NUM_TRAIN_CLASSES)
        pairs = target_t[counted] * NUM_TRAIN_CLASSES + pred_t[counted]
        flat = torch.bincount(pairs, minlength=NUM_TRAIN_CLASSES * NUM_TRAIN_CLASSES)
        self.confusion += flat.reshape(NUM_TRAIN_CLASSES, NUM_TRAIN_CLASSES).cpu().numpy()
        for image in range(pred_t.shape[0]):
            self._add_instances(pred_t[image], inst_t[image].long())

    def _add_instances(self, pred: torch.Tensor, inst: torch.Tensor) -> None:
        """Weighted TP/FN of every instance of one (H, W) image."""
        is_instance = inst > 1000
        ids, inverse, sizes = torch.unique(inst[is_instance], return_inverse=True, return_counts=True)
        if ids.numel() == 0:
            return
        label_ids = (ids // 1000).cpu().numpy()
        lookup = torch.full((int(label_ids.max()) + 1,), -1, dtype=torch.long)
        for label_id, (train_id, _) in INSTANCE_CLASSES.items():
            if label_id < len(lookup):
                lookup[label_id] = train_id
        train_ids = lookup[torch.from_numpy(label_ids)].to(pred.device)
        inst_pred = pred[is_instance]
        hits = (inst_pred == train_ids[inverse]).long()
        tp = torch.bincount(inverse, weights=hits.double(), minlength=len(ids)).cpu().numpy()
        # Category of each pixel's prediction vs its instance's category (-1: no category).
        category_index = torch.full((NUM_TRAIN_CLASSES + 1,), -1, dtype=torch.long)
        for train_id, category in _CATEGORY_OF.items():
            category_index[train_id] = list(CATEGORIES).index(category)
        pred_category = category_index[inst_pred.clamp(-1, NUM_TRAIN_CLASSES).cpu()]
        inst_category = category_index[train_ids.clamp(-1, NUM_TRAIN_CLASSES).cpu()][inverse.cpu()]
        cat_hits = ((pred_category == inst_category) & (inst_category >= 0)).double()
        cat_tp = torch.bincount(inverse.cpu(), weights=cat_hits, minlength=len(ids)).numpy()
        sizes = sizes.cpu().numpy().astype(np.float64)
        names = {train_id: name for train_id, name in INSTANCE_CLASSES.values()}
        for train_id, count, cat_count, size in zip(train_ids.cpu().numpy(), tp, cat_tp, sizes):
            if train_id < 0:
                continue
            weight = AVERAGE_INSTANCE_SIZE[names[int(train_id)]] / size
            self.weighted_tp[train_id] += count * weight
            self.weighted_fn[train_id] += (size - count) * weight
            self.instances[train_id] += 1
            k = INSTANCE_CATEGORIES.index(_CATEGORY_OF[int(train_id)])
            self.category_weighted_tp[k] += cat_count * weight
            self.category_weighted_fn[k] += (size - cat_count) * weight

    def merge(self, other: "CityscapesIIoU") -> "CityscapesIIoU":
        """Add another shard's sums; returns self."""
        self.weighted_tp += other.weighted_tp
        self.weighted_fn += other.weighted_fn
        self.false_pos += other.false_pos
        self.instances += other.instances
        self.confusion += other.confusion
        self.category_weighted_tp += other.category_weighted_tp
        self.category_weighted_fn += other.category_weighted_fn
        return self

    def state_dict(self) -> dict[str, Any]:
        """Plain numpy sums per train id."""
        return {
            "weighted_tp": self.weighted_tp.copy(),
            "weighted_fn": self.weighted_fn.copy(),
            "false_pos": self.false_pos.copy(),
            "instances": self.instances.copy(),
            "confusion": self.confusion.copy(),
            "category_weighted_tp": self.category_weighted_tp.copy(),
            "category_weighted_fn": self.category_weighted_fn.copy(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "CityscapesIIoU":
        """Rebuild from `state_dict()` output."""
        keys = ("weighted_tp", "weighted_fn", "false_pos", "instances", "confusion",
                "category_weighted_tp", "category_weighted_fn")
        check_keys(state, keys, "CityscapesIIoU")
        meter = cls()
        for key in keys:
            expected = getattr(meter, key)
            value = np.asarray(state[key], dtype=expected.dtype)
            if value.shape != expected.shape:
                raise ValueError(
                    f"CityscapesIIoU.from_state: {key} has shape {value.shape}, expected {expected.shape}"
                )
            setattr(meter, key, value.copy())
        return meter

    def _category_false_pos(self, ids: tuple[int, ...]) -> int:
        """Pixels of other evaluated classes predicted in the category `ids`."""
        others = [t for t in range(NUM_TRAIN_CLASSES) if t not in ids]
        return int(self.confusion[np.ix_(others, list(ids))].sum())

    def _categories(self) -> dict[str, float]:
        """category_iou(/<category>) and category_iiou(/<category>); NaN where undefined."""
        result: dict[str, float] = {}
        for name, ids in CATEGORIES.items():
            block = list(ids)
            tp = int(self.confusion[np.ix_(block, block)].sum())
            fn = int(self.confusion[block, :].sum()) - tp
            denom = tp + fn + self._category_false_pos(ids)
            result[f"category_iou/{name}"] = tp / denom if denom > 0 else float("nan")
        for k, name in enumerate(INSTANCE_CATEGORIES):
            tp, fn = self.category_weighted_tp[k], self.category_weighted_fn[k]
            denom = tp + fn + self._category_false_pos(CATEGORIES[name])
            result[f"category_iiou/{name}"] = float(tp / denom) if denom > 0 else float("nan")
        for prefix in ("category_iou", "category_iiou"):
            scores = [v for k, v in result.items() if k.startswith(prefix + "/") and not np.isnan(v)]
            result[prefix] = float(np.mean(scores)) if scores else float("nan")
        return result

    def compute(self) -> dict[str, float]:
        """{"iiou", "iiou/<name>", "category_iou", ...}: NaN for an undefined class or category."""
        result: dict[str, float] = {}
        scores = []
        for train_id, name in INSTANCE_CLASSES.values():
            denom = self.weighted_tp[train_id] + self.false_pos[train_id] + self.weighted_fn[train_id]
            value = float(self.weighted_tp[train_id] / denom) if denom > 0 else float("nan")
            result[f"iiou/{name}"] = value
            if not np.isnan(value):
                scores.append(value)
        if not scores:
            raise ValueError("CityscapesIIoU.compute: no instance and no prediction of an instance class was seen")
        result["iiou"] = float(np.mean(scores))
        result.update(self._categories())
        return result
