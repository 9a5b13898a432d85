"""What a sweep searches and how: Tune's param space, the search algorithm, ASHA, concurrency.

From a `SweepConfig` (pipelines/config/sweep.py):

- `param_space`: Tune domains for the searched values only (lambda log-uniform, rho, the tau
  schedule's start/end/shape/annealing length, the gated blocks); fixed values never reach
  Tune, `trial_values` merges them back in.
- `search_algorithm`: Optuna's NSGA-II through `OptunaSearch` with two objectives, the task
  metric (`score`, maximised) and measured multiply-adds per image (`macs`, minimised);
  random search (Tune's seeded variant generator); or a grid over every `choices` list.
- `scheduler`: ASHA on `score`, one rung per trial stage (`training_iteration` counts the
  stages a trial has reported), or FIFO.
- `trial_config`: the pipeline config one trial trains, its stages carrying the trial's values.
- `max_concurrent`: trials the cluster fits at once (Train workers + the Tune function +
  one CPU left for Ray Data's decode tasks, which ask for whole CPUs).
"""
from __future__ import annotations

import math
from typing import Any, Optional

from pipelines.config import ConfigError, Param, PipelineConfig, SweepConfig, from_dict

SCORE = "score"  # the task metric reported to Tune (tracking.front_metric), maximised
COST = "macs"  # multiply-adds per image actually spent, minimised
DATA_CPUS = 1.0  # one Ray Data decode task's CPU, kept free beside the trials


def encode_blocks(blocks: tuple[str, ...]) -> str:
    """("res4", "res5") -> "res4+res5": Optuna's categorical values must be scalars."""
    return "+".join(blocks)


def decode_blocks(text: str) -> tuple[str, ...]:
    return tuple(text.split("+"))


def param_space(sweep: SweepConfig) -> dict[str, Any]:
    """Tune domains of the searched parameters, keyed by parameter name."""
    from ray import tune

    space: dict[str, Any] = {}
    for name, p in sweep.space.items():
        if not p.searched:
            continue
        if p.choices is not None:
            values = [encode_blocks(c) if name == "gated" else c for c in p.choices]
            space[name] = tune.grid_search(values) if sweep.algorithm == "grid" else tune.choice(values)
        elif p.log:
            space[name] = tune.loguniform(p.low, p.high)
        else:
            space[name] = tune.uniform(p.low, p.high)
    return space


def search_algorithm(sweep: SweepConfig, concurrent: int) -> Any:
    """OptunaSearch(NSGA-II, score max, macs min) for nsga2; Tune's variant generator otherwise.

    Both hold at most `concurrent` trials at once (Tune ignores `max_concurrent_trials` for a
    variant generator, so the limit is set on the algorithm itself).
    """
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if sweep.algorithm != "nsga2":
        return BasicVariantGenerator(random_state=sweep.seed, max_concurrent=concurrent)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    # At least two generations within num_samples, so the later ones are bred from the front.
    population = max(2, min(50, sweep.num_samples // 2))
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=sweep.seed)
    searcher = OptunaSearch(metric=[SCORE, COST], mode=["max", "min"], sampler=sampler)
    return ConcurrencyLimiter(searcher, max_concurrent=concurrent)


def expected_trials(sweep: SweepConfig) -> int:
    """Trials a complete sweep has: num_samples, times the grid's size under grid search."""
    size = 1
    if sweep.algorithm == "grid":
        for p in sweep.space.values():
            size *= len(p.choices) if p.searched else 1
    return sweep.num_samples * size


def scheduler(sweep: SweepConfig, stages: int) -> Optional[Any]:
    """ASHA on the task metric with one rung per trial stage, or None (FIFO)."""
    if not sweep.asha.enabled:
        return None
    if stages < 2:
        raise ConfigError(
            f"sweep.asha.enabled: ASHA compares trials between stages; the trials have {stages} stage(s), need >= 2"
        )
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="training_iteration",
        metric=SCORE,
        mode="max",
        max_t=stages,
        grace_period=min(sweep.asha.grace_period, stages),
        reduction_factor=sweep.asha.reduction_factor,
    )


def trial_values(sweep: SweepConfig, sampled: dict[str, Any]) -> dict[str, Any]:
    """Fixed values of `sweep.space` plus the ones Tune sampled for this trial (decoded)."""
    values = {name: p.value for name, p in sweep.space.items() if not p.searched}
    for name, value in sampled.items():
        if name in sweep.space:
            values[name] = decode_blocks(value) if name == "gated" else value
    return values


def trial_config(
    pipeline: PipelineConfig,
    values: dict[str, Any],
    trial_id: str,
    storage_path: str,
) -> PipelineConfig:
    """The pipeline config of one trial: its own id and storage, stages carrying `values`.

    lam, gated and the tau schedule apply to every stage; rho is the last stage's target and
    caps the earlier ones (a curriculum never raises density); tau_iters is a fraction of
    each stage's iterations.

    Raises:
        ConfigError: the values make an invalid curriculum (checked like any config).
    """
    raw = pipeline.to_dict()
    raw["pipeline_id"] = trial_id
    raw["storage_path"] = storage_path
    last = len(raw["stages"]) - 1
    for i, stage in enumerate(raw["stages"]):
        for key in ("lam", "tau_start", "tau_end", "tau_shape"):
            if key in values:
                stage[key] = values[key]
        if "gated" in values:
            stage["gated"] = list(values["gated"])
        if "tau_iters" in values:
            stage["tau_iters"] = max(1, round(values["tau_iters"] * stage["iterations"]))
        if "rho" in values:
            own = stage.get("rho")
            stage["rho"] = values["rho"] if i == last or own is None else max(own, values["rho"])
    try:
        return from_dict(raw)
    except ConfigError as err:
        raise ConfigError(f"trial {trial_id} with {values}: {err}") from None


def check_space(pipeline: PipelineConfig, sweep: SweepConfig) -> None:
    """Fail before the sweep starts when some sample could break the curriculum's rules."""
    starts = _bounds(sweep.space.get("tau_start"), [s.tau_start for s in pipeline.stages])
    ends = _bounds(sweep.space.get("tau_end"), [s.tau_end for s in pipeline.stages])
    if ends[1] > starts[0]:
        raise ConfigError(
            f"sweep.space: tau_end can reach {ends[1]:g} above tau_start's {starts[0]:g}; "
            "tau must decrease (keep every tau_end <= every tau_start)"
        )
    gated = sweep.space.get("gated")
    if gated is not None:
        options = gated.choices if gated.searched else (gated.value,)
        for option in options:
            trial_config(pipeline, {"gated": option}, "check", pipeline.storage_path)


def max_concurrent(sweep: SweepConfig, pipeline: PipelineConfig, cluster: dict[str, float]) -> int:
    """Trials that fit at once on `cluster` (ray.cluster_resources()), capped by the config.

    Raises:
        ConfigError: not even one trial fits.
    """
    scaling = pipeline.scaling
    per_trial = sweep.trial_cpus + scaling.num_workers * scaling.cpus_per_worker
    cpus = float(cluster.get("CPU", 0.0))
    fit = math.floor((cpus - DATA_CPUS) / per_trial + 1e-9) if per_trial > 0 else sweep.num_samples
    if scaling.use_gpu:
        gpus = float(cluster.get("GPU", 0.0))
        fit = min(fit, math.floor(gpus / (scaling.num_workers * scaling.gpus_per_worker) + 1e-9))
    if fit < 1:
        raise ConfigError(
            f"one trial needs {per_trial:g} CPUs (sweep.trial_cpus + scaling.num_workers x "
            f"scaling.cpus_per_worker) plus {DATA_CPUS:g} for Ray Data"
            + (f" and {scaling.num_workers * scaling.gpus_per_worker:g} GPUs" if scaling.use_gpu else "")
            + f"; the cluster has {cpus:g} CPUs, {cluster.get('GPU', 0):g} GPUs"
        )
    return max(1, min(fit, sweep.max_concurrent or fit))


def _bounds(param: Optional[Param], stage_values: list[float]) -> tuple[float, float]:
    if param is None:
        return min(stage_values), max(stage_values)
    if not param.searched:
        return param.value, param.value
    if param.choices is not None:
        return min(param.choices), max(param.choices)
    return param.low, param.high


__all__ = [
    "COST", "SCORE", "check_space", "decode_blocks", "encode_blocks", "expected_trials", "max_concurrent", "param_space",
    "scheduler", "search_algorithm", "trial_config", "trial_values",
]
