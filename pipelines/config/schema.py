"""The config schema: one typed dataclass per section, for curricula and sweeps alike.

A staged-pipeline YAML fills `PipelineConfig`; a sweep YAML is the same file plus a `sweep:`
section (`SweepConfig`, in `sweep.py` beside this file). Parsing and checks are in
`parse.py` and `checks.py`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Optional

from pag_model.tasks import TASKS
from pipelines.config.sweep import SweepConfig

Backbone = Literal["resnet50", "resnet101", "resnet26", "resnet_tiny", "resnet_demo"]
GatedBlock = Literal["res2", "res3", "res4", "res5"]
MultiPoolPlace = Literal["res3", "res4", "res5", "res6"]
Task = Literal[tuple(TASKS)]  # the task table's names (pag_model.tasks)
TauShape = Literal["linear", "exponential", "cosine"]
HeadUpsample = Literal["deconv", "bilinear"]
StageKind = Literal["pag", "dense", "truncated", "layer_skip", "static_mask"]
Optimizer = Literal["sgd", "adam", "adamw"]


@dataclass
class ModelConfig:
    """PAGNet constructor arguments that stay fixed across stages.

    Args:
        backbone: timm ResNet name (`resnet_tiny` is the small CPU demo network).
        tasks: output heads to train.
        num_classes: semantic classes (NYUv2 40, Cityscapes 19, 2D-3D-S 13).
        multipool_variant: `pag` (binary selection, the paper) or `wavg` (softmax average).
        dilations: MultiPool dilation rates, 0 = copy.
        pretrained: None (random init), `timm`, or a local weights path.
        head_channels: width of the task heads.
        head_upsample: `deconv` (the paper's heads, at input resolution) or `bilinear`
            (convolutions at stride 8, bilinear upsampling of the prediction: cheap heads, so
            the gated convs dominate a small network's cost).
    """

    backbone: Backbone = "resnet_tiny"
    tasks: tuple[Task, ...] = ("semantic",)
    num_classes: int = 40
    multipool_variant: Literal["pag", "wavg"] = "pag"
    dilations: tuple[int, ...] = (0, 1, 2, 4, 6, 8, 10)
    pretrained: Optional[str] = None
    head_channels: int = 64
    head_upsample: HeadUpsample = "deconv"


@dataclass
class DataConfig:
    """Where the Parquet shards are and how training samples are cut.

    Args:
        uri: shard directory written by `pipelines.datasets.convert` (local path or s3://).
        train_split: split trained on.
        eval_split: split evaluated on.
        crop: random training crop (H, W), divisible by 8.
        eval_images: evaluate on at most this many images (0 = the whole split).
    """

    uri: str = "demo_out/shards"
    train_split: str = "train"
    eval_split: str = "test"
    crop: tuple[int, int] = (64, 64)
    eval_images: int = 0


@dataclass
class StageConfig:
    """One stage of the curriculum (paper Section 4); it starts from the previous stage's
    final checkpoint, or from stage `init`'s.

    Kinds (what the stage's gates are; the paper's Table 2 compares them at equal cost):
    - `pag`: pixel-wise gates on the 3x3 convs of the `gated` blocks (with `rho`: the KL
      sparsity loss), the paper's method; without gated blocks a plain curriculum step;
    - `dense`: no gates (a dense control: same start, same iterations);
    - `truncated`: the top `truncate` gateable blocks of `gated` lose their 3x3 conv
      (fixed, nothing learned), or as many as make the cost closest to stage `match`'s;
    - `layer_skip`: one gate per image and block (adaptive inference graphs, the paper's
      [51]), KL target `rho` on the share of images computing each block;
    - `static_mask`: a learned, input-independent mask per block (PerforatedCNN), KL target `rho`.

    Args:
        name: unique stage name; run names and checkpoints derive from it.
        kind: one of the kinds above.
        iterations: SGD iterations of this stage.
        lr: base learning rate, decayed by the poly policy over `iterations`.
        lam: weight of the sparsity loss lambda * sum_l KL(rho || g_l).
        rho: target fraction of active pixels per gated layer; None = no sparsity loss.
        multipool: block after which MultiPool sits, or None.
        gated: blocks whose bottlenecks get PAG gates.
        tau_start: Gumbel temperature at the first iteration.
        tau_end: temperature at the last iteration.
        tau_shape: schedule shape between the two.
        tau_iters: iterations over which tau anneals (held at tau_end after); None = the stage.
        init: the earlier stage whose final checkpoint this one starts from; None = the previous.
        truncate: `truncated` stages: how many of the top gateable blocks lose their 3x3 conv.
        match: `truncated` stages: an earlier stage whose evaluated multiply-add ratio the
            truncation matches as closely as whole blocks allow (instead of `truncate`).
        seed: the stage's random seed (data order, new gates' initial weights, Gumbel noise);
            None = train.seed. Repeats of a comparison from one checkpoint differ only by it.
        gate_init: the gates' initial probability of computing (a new gate's bias). With Adam
            a bias moves about `lr` per step, so input-independent gates (static_mask) and
            per-image gates (layer_skip) need a start nearer their rho to reach it in a short
            stage; pixel gates move through their weights as well.
        calibrate: before the stage's evaluation, shift each gated layer's compute logit so
            its evaluated density on training images is `rho` (`pag_model.calibration`); the
            logged model is the calibrated one, the densities before and after are logged.
    """

    name: str
    iterations: int
    kind: StageKind = "pag"
    lr: float = 2e-4
    lam: float = 1e-4
    rho: Optional[float] = None
    multipool: Optional[MultiPoolPlace] = None
    gated: tuple[GatedBlock, ...] = ()
    tau_start: float = 1.0
    tau_end: float = 0.1
    tau_shape: TauShape = "linear"
    tau_iters: Optional[int] = None
    init: Optional[str] = None
    truncate: Optional[int] = None
    match: Optional[str] = None
    seed: Optional[int] = None
    gate_init: float = 0.95
    calibrate: bool = False


@dataclass
class TrainConfig:
    """Optimiser and loop settings shared by all stages.

    Args:
        batch_size: images per worker per iteration (the paper uses 1).
        optimizer: `sgd` (with momentum: the paper's), `adam` or `adamw`.
        gate_lr_mult: the gates' learning rate as a multiple of the stage's `lr`.
        momentum: SGD momentum (Adam's beta1 stays at its default).
        weight_decay: weight decay (decoupled for AdamW).
        poly_power: exponent of the poly LR policy.
        seed: base random seed (each worker adds its rank).
        checkpoint_every: iterations between checkpoints (the last iteration always saves).
        eval_every: iterations between evaluations (0 = only at the end of a stage).
        log_every: iterations between metric reports.
        max_failures: Ray Train restarts of a failed worker group per stage.
        bf16: bf16 autocast on GPU (ignored on CPU).
    """

    batch_size: int = 1
    optimizer: Optimizer = "sgd"
    gate_lr_mult: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    poly_power: float = 0.9
    seed: int = 0
    checkpoint_every: int = 50
    eval_every: int = 0
    log_every: int = 10
    max_failures: int = 1
    bf16: bool = True


@dataclass
class ScalingConfig:
    """How many Ray Train workers and what each one gets.

    Args:
        num_workers: data-parallel workers (gloo on CPU, NCCL on GPU).
        use_gpu: one GPU share per worker.
        cpus_per_worker: CPUs reserved per worker (fractions allowed).
        gpus_per_worker: GPUs per worker when `use_gpu`.
    """

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0


@dataclass
class TrackingConfig:
    """MLflow settings.

    Args:
        tracking_uri: MLflow server URL; None = a SQLite file in the run directory.
        experiment: MLflow experiment name.
        registered_model: Model Registry name for the front's models.
        front_metric: metric that ranks the Pareto front (higher is better).
        budget: multiply-add budget as a fraction of the dense model; the best front model
            within it gets the `<pipeline_id>-champion` alias.
    """

    tracking_uri: Optional[str] = None
    experiment: str = "pag-staged"
    registered_model: str = "pag-demo"
    front_metric: str = "semantic/miou"
    budget: float = 0.8


@dataclass
class PipelineConfig:
    """A whole staged pipeline.

    Args:
        pipeline_id: stable id; re-running the same id skips finished stages.
        storage_path: where checkpoints, stage records and the default MLflow DB live
            (local directory or s3://bucket/prefix).
        model, data, train, scaling, tracking: see their classes.
        stages: the curriculum, in order (in a sweep config: the stages every trial runs).
        sweep: the `sweep:` section of a sweep config (`pipelines/sweep.py`), else None.
    """

    pipeline_id: str = "demo"
    storage_path: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    stages: list[StageConfig] = field(default_factory=list)
    sweep: Optional[SweepConfig] = None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists) in the YAML's own form: what is logged, passed
        to workers and read back by `from_dict`."""
        out = _plain(asdict(self))
        out["sweep"] = None if self.sweep is None else self.sweep.to_dict()
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
