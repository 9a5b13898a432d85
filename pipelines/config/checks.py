"""Checks across fields that the types cannot express, for curricula and sweeps."""
from __future__ import annotations

from pipelines.config.errors import ConfigError
from pipelines.config.schema import PipelineConfig
from pipelines.config.sweep import SweepConfig


def validate(config: PipelineConfig) -> None:
    """Check ranges and cross-field invariants the types cannot express."""
    if not _is_name(config.pipeline_id):
        raise ConfigError(
            f"pipeline_id={config.pipeline_id!r}: use letters, digits, - and _ (it names runs, paths and MLflow filters)"
        )
    model = config.model
    if not model.tasks:
        raise ConfigError("model.tasks=[]: at least one task is required (semantic, depth, normals, boundary)")
    _positive("model.head_channels", model.head_channels)
    _positive("model.num_classes", model.num_classes)
    for key in ("momentum", "weight_decay", "poly_power"):
        _non_negative(f"train.{key}", getattr(config.train, key))
    _non_negative("train.max_failures", config.train.max_failures)
    _non_negative("train.eval_every", config.train.eval_every)
    _non_negative("data.eval_images", config.data.eval_images)
    if not config.stages:
        raise ConfigError("stages: at least one stage is required")
    names = [s.name for s in config.stages]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"stages: names must be unique, repeated: {dupes}")
    for i, stage in enumerate(config.stages):
        where = f"stages.{stage.name}"
        if not _is_name(stage.name):
            raise ConfigError(f"stages.{i}.name={stage.name!r}: use letters, digits, - and _ (no dots: overrides address stages by name)")
        _positive(f"{where}.iterations", stage.iterations)
        _positive(f"{where}.lr", stage.lr)
        if stage.lam < 0:
            raise ConfigError(f"{where}.lam={stage.lam}: must be >= 0")
        if stage.rho is not None and not 0.0 < stage.rho <= 1.0:
            raise ConfigError(f"{where}.rho={stage.rho}: must be in (0, 1] or null")
        if stage.rho is not None and not stage.gated:
            raise ConfigError(f"{where}.rho={stage.rho}: needs gated blocks (gated is empty)")
        _check_kind(config, i)
        if stage.tau_iters is not None and stage.tau_iters < 1:
            raise ConfigError(f"{where}.tau_iters={stage.tau_iters}: must be >= 1 or null (the whole stage)")
        if not 0.0 < stage.tau_end <= stage.tau_start:
            raise ConfigError(
                f"{where}: tau must decrease, 0 < tau_end <= tau_start, got "
                f"{stage.tau_start} -> {stage.tau_end}"
            )
        if i > 0:
            prev = _start_of(config, i)
            if prev.multipool is not None and stage.multipool != prev.multipool:
                raise ConfigError(
                    f"{where}.multipool={stage.multipool!r}: a stage starts from {prev.name}, "
                    f"which has multipool={prev.multipool!r}; it cannot be removed or moved"
                )
            lost = sorted(set(prev.gated) - set(stage.gated))
            if lost and stage.kind == "pag" and prev.kind == "pag":
                raise ConfigError(
                    f"{where}.gated={list(stage.gated)}: drops {lost} gated in {prev.name}"
                )
    crop = config.data.crop
    if any(c <= 0 or c % 8 for c in crop):
        raise ConfigError(f"data.crop={list(crop)}: sizes must be positive multiples of 8")
    for key in ("batch_size", "checkpoint_every", "log_every"):
        _positive(f"train.{key}", getattr(config.train, key))
    _positive("train.gate_lr_mult", config.train.gate_lr_mult)
    _positive("scaling.num_workers", config.scaling.num_workers)
    _positive("scaling.cpus_per_worker", config.scaling.cpus_per_worker)
    if not 0.0 < config.tracking.budget <= 1.0:
        raise ConfigError(f"tracking.budget={config.tracking.budget}: must be in (0, 1]")


def _start_of(config: PipelineConfig, i: int):
    """The stage stage `i` starts from: its `init`, else the previous one."""
    stage = config.stages[i]
    if stage.init is None:
        return config.stages[i - 1]
    return next(s for s in config.stages[:i] if s.name == stage.init)


def _check_kind(config: PipelineConfig, i: int) -> None:
    """A stage's kind against its other fields; `init` and `match` name earlier stages."""
    stage = config.stages[i]
    where = f"stages.{stage.name}"
    earlier = [s.name for s in config.stages[:i]]
    for key in ("init", "match"):
        value = getattr(stage, key)
        if value is not None and value not in earlier:
            raise ConfigError(f"{where}.{key}={value!r}: not an earlier stage; one of {earlier}")
    if stage.kind == "dense":
        if stage.gated or stage.rho is not None:
            raise ConfigError(f"{where}.kind=dense: a dense stage has no gates; remove gated and rho")
    elif stage.kind != "pag" and not stage.gated:
        raise ConfigError(f"{where}.kind={stage.kind}: needs gated blocks (gated is empty)")
    if stage.kind in ("layer_skip", "static_mask") and stage.rho is None:
        raise ConfigError(f"{where}.kind={stage.kind}: needs rho, the target share of computed blocks/pixels")
    if stage.kind == "truncated":
        if stage.rho is not None:
            raise ConfigError(f"{where}.kind=truncated: learns nothing to sparsify; remove rho")
        if (stage.truncate is None) == (stage.match is None):
            raise ConfigError(f"{where}.kind=truncated: set exactly one of truncate (blocks) and match (a stage)")
        if stage.truncate is not None and stage.truncate < 1:
            raise ConfigError(f"{where}.truncate={stage.truncate}: must be >= 1")
    elif stage.truncate is not None or stage.match is not None:
        raise ConfigError(f"{where}: truncate and match apply to kind=truncated only (kind is {stage.kind})")
    if not 0.0 < stage.gate_init < 1.0:
        raise ConfigError(f"{where}.gate_init={stage.gate_init}: must be in (0, 1)")
    if stage.calibrate and (stage.rho is None or stage.kind not in ("pag", "layer_skip", "static_mask")):
        raise ConfigError(f"{where}.calibrate=true: needs learned gates with a rho (kind pag, layer_skip or static_mask)")
    if i == 0 and stage.init is not None:
        raise ConfigError(f"{where}.init={stage.init!r}: the first stage has no earlier stage")


def validate_sweep(cfg: SweepConfig) -> None:
    """Check the `sweep:` section's values and their combinations."""
    for key, minimum in (("num_samples", 1), ("max_concurrent", 0), ("max_failures", 0), ("seed", 0)):
        if getattr(cfg, key) < minimum:
            raise ConfigError(f"sweep.{key}={getattr(cfg, key)!r}: expected an integer >= {minimum}")
    for key, minimum in (("grace_period", 1), ("reduction_factor", 2)):
        if getattr(cfg.asha, key) < minimum:
            raise ConfigError(f"sweep.asha.{key}={getattr(cfg.asha, key)!r}: expected an integer >= {minimum}")
    for i, fraction in enumerate(cfg.budgets):
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"sweep.budgets.{i}={fraction!r}: expected a fraction in (0, 1]")
    if not cfg.base:
        raise ConfigError("sweep.base is required: a checkpoint directory, models:/NAME@ALIAS or curriculum:STAGE")
    if cfg.base.startswith("curriculum:") and not cfg.curriculum:
        raise ConfigError(f"sweep.base={cfg.base!r} needs sweep.curriculum (the staged pipeline's YAML)")
    if not _is_name(cfg.sweep_id):
        raise ConfigError(f"sweep.sweep_id={cfg.sweep_id!r}: use letters, digits, - and _")
    if cfg.algorithm == "grid":
        ranges = [p.name for p in cfg.space.values() if p.low is not None]
        if ranges:
            raise ConfigError(f"sweep.space.{ranges[0]}: grid search needs a `choices` list, not a range")
    if cfg.trial_cpus <= 0:
        raise ConfigError(f"sweep.trial_cpus={cfg.trial_cpus}: must be > 0 (Tune cannot place a trial that asks for nothing)")
    if not cfg.budgets:
        raise ConfigError("sweep.budgets: at least one budget fraction is required")


def check_stages(pipeline: PipelineConfig, sweep: SweepConfig) -> None:
    """The trial stages must be sparsity stages: gated, with a rho, so every trial is a point."""
    for stage in pipeline.stages:
        if stage.rho is None and "rho" not in sweep.space:
            raise ConfigError(f"stages.{stage.name}: a trial stage needs rho (or sweep.space.rho)")
        if not stage.gated and "gated" not in sweep.space:
            raise ConfigError(f"stages.{stage.name}: a trial stage needs gated blocks (or sweep.space.gated)")


def _is_name(text: str) -> bool:
    return bool(text) and text.isascii() and text.replace("-", "").replace("_", "").isalnum()


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{key}={value}: must be > 0")


def _non_negative(key: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"{key}={value}: must be >= 0")
