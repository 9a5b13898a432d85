"""pag_model: Pixel-wise Attentional Gating (Kong & Fowlkes) for dense prediction in PyTorch.

Public names; see each module's docstring. This package never imports `pipelines`.
"""
from .backbone import BACKBONES, build_backbone, load_weights
from .blocks import MACRO_BLOCKS, PAGBottleneck, convert_to_pag, pag_blocks
from .evaluation import EvalStep, Evaluator, crop_outputs, evaluate, pad_to_multiple, predict_full_size
from .flops import MacReport, count_macs, ponder_maps
from .gating import GATE_MODES, GumbelGate, gumbel_straight_through
from .losses import IGNORE, boundary_loss, depth_loss, normal_loss, semantic_loss
from .multipool import DEFAULT_DILATIONS, MULTIPOOL_VARIANTS, MultiPool
from .network import MULTIPOOL_PLACES, PAGNet
from .norm import FrozenBatchNorm2d, freeze_batchnorm
from .schedule import TAU_SHAPES, TauSchedule
from .sparsity import check_rho, kl_divergence, layer_densities, sparsity_loss
from .task_meters import MeterSettings, TaskMeter
from .tasks import TASKS, TaskSpec, check_tasks, eval_fields, target_fields, task_loss

__all__ = [
    "BACKBONES", "DEFAULT_DILATIONS", "GATE_MODES", "IGNORE", "MACRO_BLOCKS", "MULTIPOOL_PLACES", "MULTIPOOL_VARIANTS",
    "TASKS", "TAU_SHAPES", "FrozenBatchNorm2d", "GumbelGate", "MacReport", "MultiPool", "PAGBottleneck",
    "PAGNet", "TauSchedule", "boundary_loss", "build_backbone", "check_rho", "convert_to_pag", "count_macs",
    "depth_loss", "freeze_batchnorm", "gumbel_straight_through", "kl_divergence", "layer_densities",
    "load_weights", "normal_loss", "pag_blocks", "ponder_maps", "semantic_loss",
    "sparsity_loss", "task_loss", "MeterSettings", "TaskMeter", "TaskSpec", "check_tasks", "eval_fields",
    "target_fields", "EvalStep", "Evaluator", "crop_outputs", "evaluate", "pad_to_multiple", "predict_full_size",
]
