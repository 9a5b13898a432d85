"""Task meters: one benchmark meter per task, fed a prediction and the evaluation batch.

Each task's meter wraps the benchmark-exact meters of `pag_model.metrics` and knows which
batch fields they read, so the evaluation loop is the same for every task:

    meter = TASKS["depth"].meter(MeterSettings(num_classes=40))
    meter.update(prediction, batch)          # prediction from TASKS["depth"].predict(outputs)
    meter.compute()                          # {"delta1": ..., "absrel": ..., ...}

compute() returns a flat dict of floats under stable names (listed in each class's KEYS),
without the task prefix; `pag_model.evaluation` adds "<task>/". Meters merge (another
shard's meter of the same task) and round-trip through state_dict() / load_state_dict().
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Protocol

import torch

from pag_model.metrics import BoundaryMeter, CityscapesIIoU, DepthMeter, NormalsMeter, SegmentationMeter
from pag_model.metrics.boundary_nms import HED_NMS, NmsReference

Batch = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class MeterSettings:
    """What the meters need to know about the evaluation set.

    Args:
        num_classes: K of the semantic task (labels 0..K-1, 255 ignored).
        class_names: K names for per-class scores (indices when None).
        workers: processes for BSDS boundary matching; None = all cores, 1 = in-process.
        nms_reference: which published boundary NMS thins the maps before matching
            (`HED_NMS`, the default, or `RCF_NMS`; see pag_model.metrics.boundary_nms).
    """

    num_classes: int = 0
    class_names: Optional[tuple[str, ...]] = None
    workers: Optional[int] = None
    nms_reference: NmsReference = HED_NMS


class TaskMeter(Protocol):
    """The interface every task meter has."""

    def update(self, prediction: torch.Tensor, batch: Batch) -> None: ...

    def compute(self) -> dict[str, float]: ...

    def merge(self, other: Any) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def _field(batch: Batch, key: str, task: str) -> torch.Tensor:
    if key not in batch:
        raise KeyError(f"{task} evaluation needs batch field {key!r}; the batch has {sorted(batch)}")
    return batch[key]


def _renamed(values: Mapping[str, float], keys: Mapping[str, str]) -> dict[str, float]:
    return {new: float(values[old]) for old, new in keys.items()}


class SemanticTaskMeter:
    """mIoU, pixel and mean class accuracy; with Cityscapes `instances`, iIoU and categories.

    Cityscapes scores are computed when the batches carry `instances` (only Cityscapes has
    them); either every batch carries them or none does.
    """

    KEYS = {"miou": "miou", "pixel_acc": "pixel_acc", "mean_acc": "mean_acc"}
    CITYSCAPES_KEYS = {"iiou": "iiou", "category_iou": "category_iou", "category_iiou": "category_iiou"}

    def __init__(self, settings: MeterSettings) -> None:
        self.segmentation = SegmentationMeter(settings.num_classes, class_names=settings.class_names)
        self.cityscapes: Optional[CityscapesIIoU] = None
        self.batches = 0

    def update(self, prediction: torch.Tensor, batch: Batch) -> None:
        """prediction (B, H, W) class ids; batch["semantic"] (B, H, W), optional "instances"."""
        target = _field(batch, "semantic", "semantic")
        has_instances = "instances" in batch
        if self.batches and has_instances != (self.cityscapes is not None):
            raise ValueError("semantic evaluation: some batches carry 'instances' and others do not")
        if has_instances and self.cityscapes is None:
            if self.segmentation.num_classes != 19:
                raise ValueError(
                    f"'instances' (Cityscapes iIoU) need the 19 Cityscapes train ids, got num_classes="
                    f"{self.segmentation.num_classes}"
                )
            self.cityscapes = CityscapesIIoU()
        self.segmentation.update(prediction, target)
        if self.cityscapes is not None:
            self.cityscapes.update(prediction, target, batch["instances"])
        self.batches += 1

    def compute(self) -> dict[str, float]:
        out = _renamed(self.segmentation.compute(), self.KEYS)
        if self.cityscapes is not None:
            out.update(_renamed(self.cityscapes.compute(), self.CITYSCAPES_KEYS))
        return out

    def merge(self, other: "SemanticTaskMeter") -> "SemanticTaskMeter":
        self.segmentation.merge(other.segmentation)
        if other.cityscapes is not None:
            self.cityscapes = self.cityscapes.merge(other.cityscapes) if self.cityscapes else other.cityscapes
        self.batches += other.batches
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            "segmentation": self.segmentation.state_dict(),
            "cityscapes": None if self.cityscapes is None else self.cityscapes.state_dict(),
            "batches": self.batches,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.segmentation = SegmentationMeter.from_state(state["segmentation"])
        self.cityscapes = None if state["cityscapes"] is None else CityscapesIIoU.from_state(state["cityscapes"])
        self.batches = int(state["batches"])

    def close(self) -> None:
        """Nothing to release."""


class DepthTaskMeter:
    """delta1..3, absrel, sqrel, rmse, rmse_log, log10 over `depth_valid` pixels (metres)."""

    KEYS = {
        "delta1": "delta1", "delta2": "delta2", "delta3": "delta3", "abs_rel": "absrel",
        "sq_rel": "sqrel", "rmse": "rmse", "rmse_log": "rmse_log", "log10": "log10",
    }

    def __init__(self, settings: MeterSettings) -> None:
        self.meter = DepthMeter()

    def update(self, prediction: torch.Tensor, batch: Batch) -> None:
        """prediction (B, H, W) metres; batch["depth"], batch["depth_valid"] (B, H, W)."""
        self.meter.update(prediction, _field(batch, "depth", "depth"), _field(batch, "depth_valid", "depth"))

    def compute(self) -> dict[str, float]:
        return _renamed(self.meter.compute(), self.KEYS)

    def merge(self, other: "DepthTaskMeter") -> "DepthTaskMeter":
        self.meter.merge(other.meter)
        return self

    def state_dict(self) -> dict[str, Any]:
        return self.meter.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.meter = DepthMeter.from_state(dict(state))

    def close(self) -> None:
        """Nothing to release."""


class NormalsTaskMeter:
    """Angular error in degrees: mean, median, rmse, within_11_25 / 22_5 / 30 (fractions)."""

    KEYS = {
        "mean": "mean", "median": "median", "rmse": "rmse", "within_11.25": "within_11_25",
        "within_22.5": "within_22_5", "within_30": "within_30",
    }

    def __init__(self, settings: MeterSettings) -> None:
        self.meter = NormalsMeter()

    def update(self, prediction: torch.Tensor, batch: Batch) -> None:
        """prediction (B, 3, H, W); batch["normals"] (B, 3, H, W), batch["normals_valid"] (B, H, W)."""
        gt = _field(batch, "normals", "normals")
        self.meter.update(prediction, gt, _field(batch, "normals_valid", "normals"))

    def compute(self) -> dict[str, float]:
        return _renamed(self.meter.compute(), self.KEYS)

    def merge(self, other: "NormalsTaskMeter") -> "NormalsTaskMeter":
        self.meter.merge(other.meter)
        return self

    def state_dict(self) -> dict[str, Any]:
        return self.meter.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.meter = NormalsMeter.from_state(dict(state))

    def close(self) -> None:
        """Nothing to release."""


class BoundaryTaskMeter:
    """BSDS500 ods, ois, ap (and the ODS threshold) against all human annotations."""

    KEYS = {"ods_f": "ods", "ois_f": "ois", "ap": "ap", "ods_t": "ods_threshold"}

    def __init__(self, settings: MeterSettings) -> None:
        self.meter = BoundaryMeter(workers=settings.workers, nms_reference=settings.nms_reference)

    def update(self, prediction: torch.Tensor, batch: Batch) -> None:
        """prediction (B, H, W) probabilities; batch["boundary_annotators"] (B, K, H, W) 0/1."""
        self.meter.update(prediction, _field(batch, "boundary_annotators", "boundary"))

    def compute(self) -> dict[str, float]:
        return _renamed(self.meter.compute(), self.KEYS)

    def merge(self, other: "BoundaryTaskMeter") -> "BoundaryTaskMeter":
        self.meter.merge(other.meter)
        return self

    def state_dict(self) -> dict[str, Any]:
        return self.meter.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        workers = self.meter.workers
        self.meter.close()
        self.meter = BoundaryMeter.from_state(dict(state), workers=workers)

    def close(self) -> None:
        """Stop the matching processes."""
        self.meter.close()
