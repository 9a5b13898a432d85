"""The `sweep:` section of a sweep config, read with the same parser as the pipeline settings.

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
the file, the key, the value and what is allowed. `Param.from_raw` is how the generic parser
(`parse.py`) reads one `sweep.space` entry.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from pipelines.config.errors import ConfigError

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

    @classmethod
    def from_raw(cls, raw: Any, key: str) -> "Param":
        """The entry at `key` (`sweep.space.<name>`) of a config: see `parse_param`."""
        return parse_param(key.rsplit(".", 1)[-1], raw)


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
    algorithm: Literal["nsga2", "random", "grid"] = "nsga2"
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


def _param_dict(p: Param) -> Any:
    if not p.searched:
        return list(p.value) if isinstance(p.value, tuple) else p.value
    if p.choices is not None:
        return {"choices": [list(c) if isinstance(c, tuple) else c for c in p.choices]}
    return {"low": p.low, "high": p.high, "log": p.log}
