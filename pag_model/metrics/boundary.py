"""BoundaryMeter: BSDS500 ODS/OIS/AP over a dataset, evaluated in parallel over images.

Each image is reduced at once to its (99, 4) counts (cntR, sumR, cntP, sumP per
threshold; `boundary_counts`), which is the whole mergeable state: shards evaluated on
different workers are combined by concatenating their per-image counts, and ODS/OIS/AP
are computed from the merged arrays exactly as `edgesEvalDir` does (`boundary_scores`).
Images are spread over a process pool (forkserver processes, safe inside threaded programs
such as Ray workers; the pool lives as long as the meter or until `close()`); `workers=1`
evaluates in the calling process.
"""
from __future__ import annotations

import os
import tempfile
import weakref
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, Optional

import numpy as np

from pag_model.metrics.boundary_image import benchmark_thresholds, boundary_counts
from pag_model.metrics.boundary_nms import HED_NMS, NmsReference
from pag_model.metrics.boundary_scores import boundary_scores, pr_curve
from pag_model.metrics.assign_native import native_library
from pag_model.metrics.correspond import MAX_DIST
from pag_model.metrics.inputs import check_keys, to_numpy


def _as_images(probs: Any) -> list[np.ndarray]:
    """A batch of probability maps as a list of (H, W) float arrays."""
    if isinstance(probs, (list, tuple)):
        return [to_numpy(p, f"probs[{n}]") for n, p in enumerate(probs)]
    array = to_numpy(probs, "probs")
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise ValueError(f"probs: expected (B, H, W), (B, 1, H, W) or a list of (H, W), got {array.shape}")
    return list(array)


def _image_annotations(item: Any, n: int) -> list[np.ndarray]:
    """One image's annotators: a list of (H, W) maps, a (K, H, W) array or one (H, W) map."""
    if isinstance(item, (list, tuple)):
        return [to_numpy(g, f"annotations[{n}][{k}]") for k, g in enumerate(item)]
    array = to_numpy(item, f"annotations[{n}]")
    if array.ndim == 2:
        return [array]
    if array.ndim == 3:
        return list(array)
    raise ValueError(f"annotations[{n}]: expected (K, H, W) or (H, W), got {array.shape}")


def _as_annotations(annotations: Any, batch: int) -> list[list[np.ndarray]]:
    """Per image, its list of K (H, W) annotator maps."""
    if isinstance(annotations, (list, tuple)):
        per_image = [_image_annotations(item, n) for n, item in enumerate(annotations)]
    else:
        array = to_numpy(annotations, "annotations")
        if array.ndim != 4:
            raise ValueError(f"annotations: expected (B, K, H, W) or a list of per-image maps, got {array.shape}")
        per_image = [list(maps) for maps in array]
    if len(per_image) != batch:
        raise ValueError(f"annotations: got {len(per_image)} images for a batch of {batch} predictions")
    return per_image


class BoundaryMeter:
    """Accumulates BSDS boundary counts; compute() -> {"ods_f", "ois_f", "ap", ...}."""

    def __init__(
        self,
        workers: Optional[int] = None,
        thresholds: int = 99,
        max_dist: float = MAX_DIST,
        nms: bool = True,
        quantize: bool = True,
        nms_reference: NmsReference = HED_NMS,
    ) -> None:
        """
        Args:
            workers: processes for evaluating images; None = all cores, 1 = in-process.
            thresholds: number of thresholds K, at linspace(1/(K+1), 1-1/(K+1), K).
            max_dist: matching tolerance as a fraction of the image diagonal.
            nms: non-maximum suppression of each map before thresholding.
            quantize: 8-bit rounding where the reference's PNG files round.
            nms_reference: which published NMS to follow: `HED_NMS` (default, HED's
                nms_process.m, smooths with convTri(E, 1) first) or `RCF_NMS`.
        """
        self.workers = max(1, os.cpu_count() or 1) if workers is None else int(workers)
        if self.workers < 1:
            raise ValueError(f"BoundaryMeter: workers must be >= 1 or None, got {workers}")
        self.thresholds = benchmark_thresholds(thresholds)
        self.max_dist = float(max_dist)
        self.nms = bool(nms)
        self.quantize = bool(quantize)
        if not isinstance(nms_reference, NmsReference):
            raise TypeError(
                f"BoundaryMeter: nms_reference must be an NmsReference (HED_NMS, RCF_NMS), got {nms_reference!r}"
            )
        self.nms_reference = nms_reference
        self._counts: list[np.ndarray] = []
        self._pool: Optional[ProcessPoolExecutor] = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: safe in threaded parents (Ray workers, torch), and the server imports
            # the evaluation code once, so each worker starts without re-importing torch.
            native_library()  # compile the matcher once here rather than in every worker
            context = get_context("forkserver")
            context.set_forkserver_preload(["pag_model.metrics.boundary_image"])
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        return self._pool

    def update(self, probs: Any, annotations: Any) -> None:
        """Evaluate a batch of images.

        Args:
            probs: (B, H, W) or (B, 1, H, W) probabilities in [0, 1], or a list of (H, W)
                maps (sizes may differ).
            annotations: (B, K, H, W) binary maps, or per image a list (or (K, H, W) array)
                of its K annotator maps.
        """
        images = _as_images(probs)
        gts = _as_annotations(annotations, len(images))
        args = (self.thresholds, self.max_dist, self.nms, self.quantize, self.nms_reference)
        if self.workers == 1 or len(images) == 1:
            results = [boundary_counts(p, g, *args) for p, g in zip(images, gts)]
        else:
            futures = [self._executor().submit(boundary_counts, p, g, *args) for p, g in zip(images, gts)]
            results = [future.result() for future in futures]
        self._counts.extend(results)

    def counts(self) -> np.ndarray:
        """(N, K, 4) int64 per-image counts (cntR, sumR, cntP, sumP)."""
        if not self._counts:
            return np.zeros((0, len(self.thresholds), 4), dtype=np.int64)
        return np.stack(self._counts)

    def merge(self, other: "BoundaryMeter") -> "BoundaryMeter":
        """Append another shard's images (same thresholds); returns self."""
        if not np.array_equal(self.thresholds, other.thresholds) or self.max_dist != other.max_dist:
            raise ValueError("BoundaryMeter.merge: shards use different thresholds or max_dist")
        settings = (self.nms, self.quantize, self.nms_reference)
        if settings != (other.nms, other.quantize, other.nms_reference):
            raise ValueError(
                f"BoundaryMeter.merge: shards prepared maps differently: (nms, quantize, reference) "
                f"{settings} vs {(other.nms, other.quantize, other.nms_reference)}"
            )
        self._counts.extend(list(other.counts()))
        return self

    def state_dict(self) -> dict[str, Any]:
        """Plain data: thresholds, settings and the (N, K, 4) counts."""
        return {
            "thresholds": self.thresholds.copy(),
            "max_dist": self.max_dist,
            "nms": self.nms,
            "quantize": self.quantize,
            "nms_reference": self.nms_reference.as_dict(),
            "counts": self.counts(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], workers: Optional[int] = 1) -> "BoundaryMeter":
        """Rebuild a meter from `state_dict()` output."""
        check_keys(state, ("thresholds", "max_dist", "nms", "quantize", "nms_reference", "counts"), "BoundaryMeter")
        thresholds = np.asarray(state["thresholds"], dtype=np.float64)
        reference = NmsReference(**state["nms_reference"])
        meter = cls(workers, len(thresholds), state["max_dist"], state["nms"], state["quantize"], reference)
        if not np.allclose(meter.thresholds, thresholds, rtol=0, atol=1e-12):
            raise ValueError("BoundaryMeter.from_state: thresholds are not the benchmark's linspace")
        counts = np.asarray(state["counts"], dtype=np.int64)
        if counts.ndim != 3 or counts.shape[1:] != (len(thresholds), 4):
            raise ValueError(f"BoundaryMeter.from_state: counts must be (N, {len(thresholds)}, 4), got {counts.shape}")
        meter._counts = list(counts)
        return meter

    def compute(self) -> dict[str, float]:
        """{"ods_f", "ods_p", "ods_r", "ods_t", "ois_f", "ois_p", "ois_r", "ap", "r50"}."""
        return boundary_scores(self.counts(), self.thresholds)

    def pr_curve(self) -> dict[str, np.ndarray]:
        """Dataset precision-recall curve: {"thresholds", "recall", "precision", "f"}."""
        return pr_curve(self.counts(), self.thresholds)

    def plot_pr(self, path: str, label: str = "PAG") -> None:
        """Write the PR curve with iso-F lines and the ODS point as a PNG (atomically)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        curve = self.pr_curve()
        scores = self.compute()
        figure = Figure(figsize=(5, 5))
        FigureCanvasAgg(figure)
        axes = figure.add_subplot(1, 1, 1)
        for f in np.arange(0.1, 1.0, 0.1):
            # Iso-F line: P = F R / (2R - F), defined for R > F / 2.
            recall_grid = np.linspace(f / 2 + 1e-3, 1.0, 200)
            precision = f * recall_grid / (2 * recall_grid - f)
            ok = precision <= 1
            axes.plot(recall_grid[ok], precision[ok], color="0.85", linewidth=0.8)
        axes.plot(curve["recall"], curve["precision"], linewidth=2, label=f"{label} [F={scores['ods_f']:.3f}]")
        axes.plot([scores["ods_r"]], [scores["ods_p"]], "o", color="black")
        axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="Recall", ylabel="Precision", aspect="equal")
        axes.grid(True, alpha=0.3)
        axes.legend(loc="lower left")
        directory = os.path.dirname(os.path.abspath(path))
        handle, tmp = tempfile.mkstemp(prefix=".pr-", suffix=".png", dir=directory)
        os.close(handle)
        try:
            figure.savefig(tmp, format="png", dpi=100)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    def close(self) -> None:
        """Shut the worker processes down (a new pool starts on the next update)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __getstate__(self) -> dict[str, Any]:
        # A meter sent to another process travels without its worker pool.
        state = self.__dict__.copy()
        state["_pool"] = None
        return state

    def __enter__(self) -> "BoundaryMeter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._counts)
