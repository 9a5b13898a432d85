"""ComputationMeter: multiply-adds actually spent per image, and gate densities.

The model library's counter gives, per image, the multiply-adds the network evaluated
(dense layers in full, gated 3x3 convolutions at active pixels only, gates and MultiPool
branches included), the multiply-adds of the same network with every gate open, and the
mean mask density of each gated layer. Reported, as METRICS.md asks: macs = mean over the
evaluation set, flops = 2 x macs, macs_ratio = sum(macs) / sum(dense macs) (the ratio of
the means), density/<layer> = mean density over images.
"""
from __future__ import annotations

from typing import Any, Mapping

from pag_model.metrics.inputs import check_finite, check_keys, to_tensor


def _per_image(value: Any, name: str) -> list[float]:
    """(B,) values as a python list of floats."""
    tensor = to_tensor(value, name).double().reshape(-1)
    check_finite(tensor, name)
    return tensor.cpu().tolist()


class ComputationMeter:
    """Mean MACs per image; compute() -> {"macs", "flops", "macs_ratio", "density/<layer>"}."""

    def __init__(self) -> None:
        self.images = 0
        self.sum_macs = 0.0
        self.sum_dense_macs = 0.0
        self.sum_density: dict[str, float] = {}

    def update(self, macs_per_image: Any, dense_macs_per_image: Any, densities: Mapping[str, Any]) -> None:
        """Add a batch.

        Args:
            macs_per_image: (B,) multiply-adds spent on each image.
            dense_macs_per_image: (B,) multiply-adds with every gate open.
            densities: per gated layer, (B,) fraction of active pixels in [0, 1].
        """
        macs = _per_image(macs_per_image, "macs_per_image")
        dense = _per_image(dense_macs_per_image, "dense_macs_per_image")
        if len(macs) != len(dense):
            raise ValueError(f"shape mismatch: {len(macs)} macs_per_image but {len(dense)} dense_macs_per_image")
        if any(m < 0 for m in macs) or any(d <= 0 for d in dense):
            raise ValueError("macs_per_image must be >= 0 and dense_macs_per_image > 0")
        if self.images and set(densities) != set(self.sum_density):
            raise ValueError(
                f"densities: layers {sorted(densities)} differ from earlier batches' {sorted(self.sum_density)}"
            )
        for layer, value in densities.items():
            per_image = _per_image(value, f"densities[{layer!r}]")
            if len(per_image) != len(macs):
                raise ValueError(f"densities[{layer!r}]: {len(per_image)} values for a batch of {len(macs)}")
            if any(d < 0 or d > 1 for d in per_image):
                raise ValueError(f"densities[{layer!r}]: values must lie in [0, 1]")
            self.sum_density[layer] = self.sum_density.get(layer, 0.0) + sum(per_image)
        self.images += len(macs)
        self.sum_macs += sum(macs)
        self.sum_dense_macs += sum(dense)

    def merge(self, other: "ComputationMeter") -> "ComputationMeter":
        """Add another shard's sums; returns self."""
        if self.images and other.images and set(other.sum_density) != set(self.sum_density):
            raise ValueError("ComputationMeter.merge: shards report different gated layers")
        self.images += other.images
        self.sum_macs += other.sum_macs
        self.sum_dense_macs += other.sum_dense_macs
        for layer, value in other.sum_density.items():
            self.sum_density[layer] = self.sum_density.get(layer, 0.0) + value
        return self

    def state_dict(self) -> dict[str, Any]:
        """Plain python sums."""
        return {
            "images": self.images,
            "sum_macs": self.sum_macs,
            "sum_dense_macs": self.sum_dense_macs,
            "sum_density": dict(self.sum_density),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "ComputationMeter":
        """Rebuild from `state_dict()` output."""
        check_keys(state, ("images", "sum_macs", "sum_dense_macs", "sum_density"), "ComputationMeter")
        meter = cls()
        meter.images = int(state["images"])
        meter.sum_macs = float(state["sum_macs"])
        meter.sum_dense_macs = float(state["sum_dense_macs"])
        meter.sum_density = {str(k): float(v) for k, v in state["sum_density"].items()}
        return meter

    def compute(self) -> dict[str, float]:
        """Means per image; macs_ratio = spent / all-gates-open."""
        if self.images == 0:
            raise ValueError("ComputationMeter.compute: no images were seen")
        macs = self.sum_macs / self.images
        result = {
            "macs": macs,
            "flops": 2.0 * macs,
            "dense_macs": self.sum_dense_macs / self.images,
            "macs_ratio": self.sum_macs / self.sum_dense_macs,
        }
        for layer, total in sorted(self.sum_density.items()):
            result[f"density/{layer}"] = total / self.images
        return result
