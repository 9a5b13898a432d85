"""Typed `sweep:` section of a sweep config, read from the same YAML as the pipeline settings.

A sweep YAML is a staged-pipeline YAML (model, data, train, scaling, tracking, stages) plus a
`sweep:` mapping. `stages` are the sparsity stages every trial runs, in order, starting from
`sweep.base`; the searched values (`sweep.space`) replace fields of those stages per trial.

    sweep:
      sweep_id: demo            # re-submitting the same id resumes the sweep
      base: curriculum:multipool
      curriculum: configs/demo.yaml
      algorithm: nsga2          # nsga2 | random | grid
      num_samples: 8
      space:
        lam: {low: 1.0e-5, high: 1.0e-2, log: true}
        rho: {low: 0.3, high: 0.9}
        tau_shape: {choices: [linear, cosine]}
        gated: {choices: [[res5], [res4, res5]]}

A searched value is a scalar (fixed), `{low, high[, log]}` (a range) or `{choices: [...]}`.
`--set sweep.num_samples=4` and `--set stages.0.iterations=10` both work; every error names
the file, the key, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from pipelines.config import ConfigError, PipelineConfig, StageConfig, apply_override, from_dict, read_yaml_mapping

ALGORITHMS = ("nsga2", "random", "grid")
TAU_SHAPES = ("linear", "exponential", "cosine")
BLOCKS = ("res2", "res3", "res4", "res5")
# name -> (kind, lower bound exclusive, upper bound inclusive); kinds: float, shape, blocks.
PARAMS: dict[str, tuple[str, float, float]] = {
    "lam": ("float", 0.0, float("inf")),
    "rho": ("float", 0.0, 1.0),
    "tau_start": ("float", 0.0, float("inf")),
    "tau_end": ("float", 0.0, float("inf")),
    "tau_iters": ("float", 0.0, 1.0),
    "tau_shape": ("shape", 0.0, 0.0),
    "gated": ("blocks", 0.0, 0.0),
}


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: exactly one of `value`, (`low`, `high`) or `choices`.

    Args:
        name: key in `sweep.space` (one of PARAMS).
        value: fixed value (not searched).
        low: lower end of a range.
        high: upper end of a range.
        log: sample the range log-uniformly.
        choices: categorical values (the grid's values under `algorithm: grid`).
    """

    name: str
    value: Any = None
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    choices: Optional[tuple] = None

    @property
    def searched(self) -> bool:
        return self.value is None


@dataclass
class AshaConfig:
    """Early stopping of hopeless trials on the task metric (ASHA), one rung per trial stage.

    Args:
        enabled: turn ASHA on.
        grace_period: stages every trial runs before it can be stopped.
        reduction_factor: keep the best 1/reduction_factor at each rung.
    """

    enabled: bool = False
    grace_period: int = 1
    reduction_factor: int = 2


@dataclass
class SweepConfig:
    """How a sweep searches, runs and publishes.

    Args:
        sweep_id: stable id; resubmitting the same id resumes the sweep (`--sweep-id`).
        base: where trials start: a checkpoint directory of the training loop, a registered
            model `models:/NAME@ALIAS` (or `/VERSION`), or `curriculum:STAGE` (that stage of
            `curriculum`, which must have finished).
        curriculum: a staged-pipeline YAML; its finished rho stages join the front.
        algorithm: nsga2 (Optuna NSGA-II over score max / multiply-adds min), random or grid.
        num_samples: trials (under grid: repetitions of the grid).
        max_concurrent: most trials at once; 0 = as many as the cluster's CPUs/GPUs fit.
        trial_cpus: CPUs the Tune function itself holds (it drives the TorchTrainer and
            evaluates), > 0; the Train workers get `scaling` on top.
        max_failures: retries of a failed trial (Tune FailureConfig).
        seed: seed of the search algorithm.
        budgets: fractions of the dense model's multiply-adds; the best front model within
            each gets the alias `flops-<fraction>` (dots as underscores: `flops-0_7`).
        asha: early stopping settings.
        space: searched or fixed values (see `Param`); unset parameters keep the stages' own.
    """

    sweep_id: str = "sweep"
    base: str = ""
    curriculum: Optional[str] = None
    algorithm: str = "nsga2"
    num_samples: int = 8
    max_concurrent: int = 0
    trial_cpus: float = 0.05
    max_failures: int = 1
    seed: int = 0
    budgets: tuple[float, ...] = (0.5, 0.7, 0.9)
    asha: AshaConfig = field(default_factory=AshaConfig)
    space: dict[str, Param] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in the YAML's own form (what MLflow logs and `parse_sweep` reads back)."""
        out = {k: getattr(self, k) for k in (f.name for f in dataclasses.fields(self)) if k not in ("asha", "space")}
        out["budgets"] = list(self.budgets)
        out["asha"] = dataclasses.asdict(self.asha)
        out["space"] = {name: _param_dict(p) for name, p in self.space.items()}
        return out


def load_sweep_config(path: str | Path, overrides: Sequence[str] = ()) -> tuple[PipelineConfig, SweepConfig]:
    """Read a sweep YAML: the pipeline settings and the `sweep:` section, overrides applied.

    Raises:
        ConfigError: naming the file, key, value and what is allowed.
    """
    path = Path(path)
    raw = read_yaml_mapping(path)
    if not isinstance(raw.get("sweep"), dict):
        raise ConfigError(f"{path}: a `sweep:` mapping is required (see pipelines/sweeps/config.py)")
    for item in overrides:
        apply_override(raw, item)
    sweep_raw = raw.pop("sweep")
    try:
        pipeline = from_dict(raw)
        sweep = parse_sweep(sweep_raw)
        check_stages(pipeline, sweep)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return pipeline, sweep


def parse_sweep(raw: dict[str, Any]) -> SweepConfig:
    """A `SweepConfig` from the `sweep:` mapping, every value checked."""
    known = {f.name for f in dataclasses.fields(SweepConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown key sweep.{unknown[0]} (allowed: {sorted(known)})")
    cfg = SweepConfig(
        sweep_id=_str(raw, "sweep_id", "sweep"),
        base=_str(raw, "base", ""),
        curriculum=raw.get("curriculum"),
        algorithm=_str(raw, "algorithm", "nsga2"),
        num_samples=_int(raw, "num_samples", 8, 1),
        max_concurrent=_int(raw, "max_concurrent", 0, 0),
        trial_cpus=_num(raw, "trial_cpus", 0.05, 0.0),
        max_failures=_int(raw, "max_failures", 1, 0),
        seed=_int(raw, "seed", 0, 0),
        budgets=tuple(_fraction(f"sweep.budgets.{i}", b) for i, b in enumerate(_list(raw, "budgets", [0.5, 0.7, 0.9]))),
        asha=_asha(raw.get("asha") or {}),
        space={name: parse_param(name, spec) for name, spec in (raw.get("space") or {}).items()},
    )
    if not cfg.base:
        raise ConfigError("sweep.base is required: a checkpoint directory, models:/NAME@ALIAS or curriculum:STAGE")
    if cfg.base.startswith("curriculum:") and not cfg.curriculum:
        raise ConfigError(f"sweep.base={cfg.base!r} needs sweep.curriculum (the staged pipeline's YAML)")
    if cfg.curriculum is not None and not isinstance(cfg.curriculum, str):
        raise ConfigError(f"sweep.curriculum={cfg.curriculum!r}: expected a YAML path")
    if not cfg.sweep_id.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"sweep.sweep_id={cfg.sweep_id!r}: use letters, digits, - and _")
    if cfg.algorithm not in ALGORITHMS:
        raise ConfigError(f"sweep.algorithm={cfg.algorithm!r}: allowed values are {list(ALGORITHMS)}")
    if cfg.algorithm == "grid":
        ranges = [p.name for p in cfg.space.values() if p.low is not None]
        if ranges:
            raise ConfigError(f"sweep.space.{ranges[0]}: grid search needs a `choices` list, not a range")
    if cfg.trial_cpus <= 0:
        raise ConfigError(f"sweep.trial_cpus={cfg.trial_cpus}: must be > 0 (Tune cannot place a trial that asks for nothing)")
    if not cfg.budgets:
        raise ConfigError("sweep.budgets: at least one budget fraction is required")
    return cfg


def parse_param(name: str, spec: Any) -> Param:
    """One `sweep.space` entry: scalar, {low, high, log} or {choices}."""
    key = f"sweep.space.{name}"
    if name not in PARAMS:
        raise ConfigError(f"unknown key {key} (searchable: {sorted(PARAMS)})")
    if not isinstance(spec, dict):
        return Param(name, value=check_value(name, spec))
    extra = sorted(set(spec) - {"low", "high", "log", "choices"})
    if extra:
        raise ConfigError(f"{key}.{extra[0]}: unknown; use a value, {{low, high, log}} or {{choices}}")
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise ConfigError(f"{key}={spec!r}: `choices` must be a non-empty list and come alone")
        return Param(name, choices=tuple(check_value(name, v, f"{key}.choices.{i}") for i, v in enumerate(spec["choices"])))
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{key}={spec!r}: a range needs both low and high")
    if PARAMS[name][0] != "float":
        raise ConfigError(f"{key}={spec!r}: {name} is categorical; use {{choices: [...]}}")
    low = check_value(name, spec["low"], f"{key}.low")
    high = check_value(name, spec["high"], f"{key}.high")
    if not low < high:
        raise ConfigError(f"{key}: low={low} must be below high={high}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{key}.log={log!r}: expected true or false")
    return Param(name, low=low, high=high, log=log)


def check_value(name: str, value: Any, key: Optional[str] = None) -> Any:
    """`value` checked against parameter `name`'s kind and bounds; gated as a sorted tuple."""
    key = key or f"sweep.space.{name}"
    kind, lo, hi = PARAMS[name]
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value <= hi:
            raise ConfigError(f"{key}={value!r}: expected a number in ({lo:g}, {hi:g}]")
        return float(value)
    if kind == "shape":
        if value not in TAU_SHAPES:
            raise ConfigError(f"{key}={value!r}: allowed values are {list(TAU_SHAPES)}")
        return value
    if not isinstance(value, list) or not value or any(b not in BLOCKS for b in value):
        raise ConfigError(f"{key}={value!r}: expected a non-empty list of blocks from {list(BLOCKS)}")
    return tuple(sorted(set(value)))


def check_stages(pipeline: PipelineConfig, sweep: SweepConfig) -> None:
    """The trial stages must be sparsity stages: gated, with a rho, so every trial is a point."""
    for stage in pipeline.stages:
        if stage.rho is None and "rho" not in sweep.space:
            raise ConfigError(f"stages.{stage.name}: a trial stage needs rho (or sweep.space.rho)")
        if not stage.gated and "gated" not in sweep.space:
            raise ConfigError(f"stages.{stage.name}: a trial stage needs gated blocks (or sweep.space.gated)")
    has_tau_iters = "tau_iters" in {f.name for f in dataclasses.fields(StageConfig)}
    tau_iters = sweep.space.get("tau_iters")
    if tau_iters is not None and not has_tau_iters and (tau_iters.searched or tau_iters.value != 1.0):
        raise ConfigError(
            "sweep.space.tau_iters: the training loop anneals tau over the whole stage; a shorter "
            "annealing needs StageConfig.tau_iters (not in this version of pipelines/config.py)"
        )


def _param_dict(p: Param) -> Any:
    if not p.searched:
        return list(p.value) if isinstance(p.value, tuple) else p.value
    if p.choices is not None:
        return {"choices": [list(c) if isinstance(c, tuple) else c for c in p.choices]}
    return {"low": p.low, "high": p.high, "log": p.log}


def _asha(raw: Any) -> AshaConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep.asha={raw!r}: expected a mapping")
    unknown = sorted(set(raw) - {"enabled", "grace_period", "reduction_factor"})
    if unknown:
        raise ConfigError(f"unknown key sweep.asha.{unknown[0]} (allowed: enabled, grace_period, reduction_factor)")
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"sweep.asha.enabled={enabled!r}: expected true or false")
    return AshaConfig(
        enabled=enabled,
        grace_period=_int(raw, "grace_period", 1, 1, "sweep.asha."),
        reduction_factor=_int(raw, "reduction_factor", 2, 2, "sweep.asha."),
    )


def _str(raw: dict, key: str, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"sweep.{key}={value!r}: expected a string")
    return value


def _int(raw: dict, key: str, default: int, minimum: int, prefix: str = "sweep.") -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{prefix}{key}={value!r}: expected an integer >= {minimum}")
    return value


def _num(raw: dict, key: str, default: float, minimum: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ConfigError(f"sweep.{key}={value!r}: expected a number >= {minimum}")
    return float(value)


def _list(raw: dict, key: str, default: list) -> list:
    value = raw.get(key, default)
    if not isinstance(value, list):
        raise ConfigError(f"sweep.{key}={value!r}: expected a list")
    return value


def _fraction(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ConfigError(f"{key}={value!r}: expected a fraction in (0, 1]")
    return float(value)
