"""Evaluation that matches the benchmarks behind the paper's tables.

Boundaries follow the BSDS500 benchmark as HED runs it (edge NMS after convTri(E, 1), as
HED's nms_process.m; `RCF_NMS` selects RCF's unsmoothed NMS instead; 99 thresholds,
morphological thinning, one-to-one pixel matching, ODS/OIS/AP); segmentation,
Cityscapes iIoU, depth, surface normals and computation each have a meter with the same
interface: update(...) per batch, merge(other), state_dict() / from_state(state) with
plain python/numpy data, and compute() -> dict[str, float]. No Ray, no MLflow.
"""
from pag_model.metrics.boundary import BoundaryMeter
from pag_model.metrics.boundary_image import benchmark_thresholds, boundary_counts
from pag_model.metrics.boundary_nms import HED_NMS, RCF_NMS, NmsReference, edges_nms, edge_orientation, prepare_edges
from pag_model.metrics.boundary_scores import boundary_scores, pr_curve
from pag_model.metrics.cityscapes import AVERAGE_INSTANCE_SIZE, CityscapesIIoU
from pag_model.metrics.computation import ComputationMeter
from pag_model.metrics.correspond import correspond_pixels
from pag_model.metrics.depth import DepthMeter
from pag_model.metrics.normals import NormalsMeter
from pag_model.metrics.segmentation import SegmentationMeter
from pag_model.metrics.thinning import thin

__all__ = [
    "AVERAGE_INSTANCE_SIZE",
    "BoundaryMeter",
    "HED_NMS",
    "NmsReference",
    "RCF_NMS",
    "CityscapesIIoU",
    "ComputationMeter",
    "DepthMeter",
    "NormalsMeter",
    "SegmentationMeter",
    "benchmark_thresholds",
    "boundary_counts",
    "boundary_scores",
    "correspond_pixels",
    "edge_orientation",
    "edges_nms",
    "pr_curve",
    "prepare_edges",
    "thin",
]
