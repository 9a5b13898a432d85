"""Typed pipeline configuration: dataclasses with defaults, YAML loading, checked overrides.

One place holds every setting of a staged run (nanoGPT / Made-With-ML style): the YAML file
under `configs/` is read into `PipelineConfig`, `--set key.sub=value` overrides are applied on
top and checked against the field types, and the resolved config is logged whole.

Lists of stages are addressed by index or by stage name: `--set stages.base.iterations=10`
or `--set stages.0.iterations=10`. Every error names the key, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import yaml

Backbone = Literal["resnet50", "resnet101", "resnet26", "resnet_tiny"]
GatedBlock = Literal["res2", "res3", "res4", "res5"]
MultiPoolPlace = Literal["res3", "res4", "res5", "res6"]
Task = Literal["semantic", "depth", "normals", "boundary"]
TauShape = Literal["linear", "exponential", "cosine"]


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
        head_channels: width of the deconvolution head.
    """

    backbone: Backbone = "resnet_tiny"
    tasks: tuple[Task, ...] = ("semantic",)
    num_classes: int = 40
    multipool_variant: Literal["pag", "wavg"] = "pag"
    dilations: tuple[int, ...] = (0, 1, 2, 4, 6, 8, 10)
    pretrained: Optional[str] = None
    head_channels: int = 64


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
    """One stage of the curriculum (paper Section 4); it starts from the previous stage.

    Args:
        name: unique stage name; run names and checkpoints derive from it.
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
    """

    name: str
    iterations: int
    lr: float = 2e-4
    lam: float = 1e-4
    rho: Optional[float] = None
    multipool: Optional[MultiPoolPlace] = None
    gated: tuple[GatedBlock, ...] = ()
    tau_start: float = 1.0
    tau_end: float = 0.1
    tau_shape: TauShape = "linear"
    tau_iters: Optional[int] = None


@dataclass
class TrainConfig:
    """Optimiser and loop settings shared by all stages.

    Args:
        batch_size: images per worker per iteration (the paper uses 1).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        poly_power: exponent of the poly LR policy.
        seed: base random seed (each worker adds its rank).
        checkpoint_every: iterations between checkpoints (the last iteration always saves).
        eval_every: iterations between evaluations (0 = only at the end of a stage).
        log_every: iterations between metric reports.
        max_failures: Ray Train restarts of a failed worker group per stage.
        bf16: bf16 autocast on GPU (ignored on CPU).
    """

    batch_size: int = 1
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
            within it gets the `champion` alias.
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
        stages: the curriculum, in order.
    """

    pipeline_id: str = "demo"
    storage_path: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    stages: list[StageConfig] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), the form logged and passed to workers."""
        return _plain(asdict(self))


class ConfigError(ValueError):
    """A config file or override that does not match the schema."""


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file; ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> PipelineConfig:
    """Read a YAML config, apply `key.sub=value` overrides, check types and invariants.

    Raises:
        ConfigError: naming the file, key, value and what is allowed.
    """
    path = Path(path)
    raw = read_yaml_mapping(path)
    for item in overrides:
        apply_override(raw, item)
    try:
        return from_dict(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def from_dict(raw: dict[str, Any]) -> PipelineConfig:
    """Build and validate a `PipelineConfig` from a nested dict (YAML or `to_dict` output)."""
    config = _build(PipelineConfig, raw, "")
    validate(config)
    return config


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `key.sub=value` in the nested dict `raw`; the value is parsed as YAML.

    Stage entries are addressed by list index or by their `name`.
    """
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty key segment in {key!r}")
    value = yaml.safe_load(text) if text.strip() else ""
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        here = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, here)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise ConfigError(f"override {item!r}: {here} is a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override {item!r}: {'.'.join(parts[:-1])} is a value, not a section")


def validate(config: PipelineConfig) -> None:
    """Check cross-field invariants the types cannot express."""
    if not config.stages:
        raise ConfigError("stages: at least one stage is required")
    names = [s.name for s in config.stages]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"stages: names must be unique, repeated: {dupes}")
    for i, stage in enumerate(config.stages):
        where = f"stages.{stage.name}"
        if not stage.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"stages.{i}.name={stage.name!r}: use letters, digits, - and _ (no dots: overrides address stages by name)")
        _positive(f"{where}.iterations", stage.iterations)
        _positive(f"{where}.lr", stage.lr)
        if stage.lam < 0:
            raise ConfigError(f"{where}.lam={stage.lam}: must be >= 0")
        if stage.rho is not None and not 0.0 < stage.rho <= 1.0:
            raise ConfigError(f"{where}.rho={stage.rho}: must be in (0, 1] or null")
        if stage.rho is not None and not stage.gated:
            raise ConfigError(f"{where}.rho={stage.rho}: needs gated blocks (gated is empty)")
        if stage.tau_iters is not None and stage.tau_iters < 1:
            raise ConfigError(f"{where}.tau_iters={stage.tau_iters}: must be >= 1 or null (the whole stage)")
        if not 0.0 < stage.tau_end <= stage.tau_start:
            raise ConfigError(
                f"{where}: tau must decrease, 0 < tau_end <= tau_start, got "
                f"{stage.tau_start} -> {stage.tau_end}"
            )
        if i > 0:
            prev = config.stages[i - 1]
            if prev.multipool is not None and stage.multipool != prev.multipool:
                raise ConfigError(
                    f"{where}.multipool={stage.multipool!r}: a stage starts from the previous "
                    f"one, which has multipool={prev.multipool!r}; it cannot be removed or moved"
                )
            lost = sorted(set(prev.gated) - set(stage.gated))
            if lost:
                raise ConfigError(
                    f"{where}.gated={list(stage.gated)}: drops {lost} gated in {prev.name}"
                )
    crop = config.data.crop
    if any(c <= 0 or c % 8 for c in crop):
        raise ConfigError(f"data.crop={list(crop)}: sizes must be positive multiples of 8")
    for key in ("batch_size", "checkpoint_every", "log_every"):
        _positive(f"train.{key}", getattr(config.train, key))
    _positive("scaling.num_workers", config.scaling.num_workers)
    _positive("scaling.cpus_per_worker", config.scaling.cpus_per_worker)
    if not 0.0 < config.tracking.budget <= 1.0:
        raise ConfigError(f"tracking.budget={config.tracking.budget}: must be in (0, 1]")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}, "s": [{"name": "x", "k": 2}]}` -> `{"a.b": 1, "s.x.k": 2, ...}`.

    Stage lists flatten by stage name, the same keys `--set` accepts.
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                out.update(flatten(item, f"{name}.{item.get('name', i)}."))
        else:
            out[name] = value
    return out


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"unknown key {where}{unknown[0]} (allowed in {where.rstrip('.') or 'the top level'}: "
            f"{sorted(known)})"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{where}{f.name}"
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing required key {key}")
            continue
        kwargs[f.name] = _coerce(hints[f.name], raw[f.name], key)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, f"{key}.")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r}: allowed values are {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"{key}={value!r}: expected a list of {len(args)} items")
            return tuple(_coerce(a, v, f"{key}.{i}") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0]
        items = [_coerce(item, v, f"{key}.{i}") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r}: expected a string")
        return value
    raise ConfigError(f"{key}: unsupported field type {tp}")


def _list_index(items: list, part: str, key: str) -> int:
    if part.isdigit():
        if int(part) >= len(items):
            raise ConfigError(f"override key {key}: index {part} out of range (0..{len(items) - 1})")
        return int(part)
    names = [x.get("name") for x in items if isinstance(x, dict)]
    if part not in names:
        raise ConfigError(f"override key {key}: no entry named {part!r} (names: {names})")
    return names.index(part)


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{key}={value}: must be > 0")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
