"""The search algorithms and the scheduler a sweep config asks for, driven by hand (no cluster):
NSGA-II suggests values inside the configured space and accepts two-objective results."""
from __future__ import annotations

import math

import pytest

from pipelines.config import ConfigError
from pipelines.sweeps.space import COST, SCORE, param_space, scheduler, search_algorithm, trial_values
from pipelines.config import parse_sweep

SPACE = {
    "lam": {"low": 1e-5, "high": 1e-2, "log": True},
    "rho": {"low": 0.3, "high": 0.9},
    "tau_start": 1.0,
    "tau_shape": {"choices": ["linear", "cosine"]},
    "gated": {"choices": [["res5"], ["res4", "res5"]]},
}


def test_nsga2_suggests_inside_the_space_and_takes_two_objectives():
    import optuna

    sweep = parse_sweep({"base": "/b", "algorithm": "nsga2", "num_samples": 6, "seed": 1, "space": SPACE})
    limiter = search_algorithm(sweep, concurrent=2)
    searcher = limiter.searcher
    assert isinstance(searcher._sampler, optuna.samplers.NSGAIISampler)
    assert searcher.metric == [SCORE, COST] and searcher.mode == ["max", "min"]
    assert limiter.max_concurrent == 2
    assert limiter.set_search_properties(None, None, param_space(sweep))
    seen = []
    for i in range(6):
        config = limiter.suggest(f"t{i}")
        values = trial_values(sweep, config)
        assert 1e-5 <= values["lam"] <= 1e-2 and 0.3 <= values["rho"] <= 0.9
        assert values["tau_start"] == 1.0 and values["tau_shape"] in ("linear", "cosine")
        assert values["gated"] in (("res5",), ("res4", "res5"))
        seen.append(values["lam"])
        limiter.on_trial_complete(f"t{i}", {SCORE: values["rho"], COST: 1e8 * values["rho"]})
    # log-uniform: samples spread over decades, not bunched near the top of the range.
    assert min(seen) < 1e-3
    study = searcher._ot_study
    assert len(study.trials) == 6 and all(len(t.values) == 2 for t in study.trials)


def test_random_and_grid_use_tunes_variant_generator():
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.sample import Categorical

    grid = parse_sweep({"base": "/b", "algorithm": "grid", "space": {"rho": {"choices": [0.5, 0.7]}, "lam": 1e-3}})
    space = param_space(grid)
    assert space == {"rho": {"grid_search": [0.5, 0.7]}}  # fixed lam never reaches Tune
    alg = search_algorithm(grid, concurrent=3)
    assert isinstance(alg, BasicVariantGenerator) and alg.max_concurrent == 3
    rnd = parse_sweep({"base": "/b", "algorithm": "random", "space": SPACE})
    assert isinstance(param_space(rnd)["gated"], Categorical)
    assert param_space(rnd)["gated"].categories == ["res5", "res4+res5"]


def test_asha_on_the_task_metric_one_rung_per_stage():
    sweep = parse_sweep({"base": "/b", "asha": {"enabled": True, "grace_period": 1, "reduction_factor": 3}})
    asha = scheduler(sweep, stages=3)
    assert (asha._time_attr, asha.metric, asha._max_t) == ("training_iteration", SCORE, 3)
    # Milestones at the grace period (1 stage), then x3 up to max_t = 3 stages.
    assert sorted(milestone for milestone, _ in asha._brackets[0]._rungs) == [1, 3]
    assert scheduler(parse_sweep({"base": "/b"}), stages=3) is None
    with pytest.raises(ConfigError, match="ASHA compares trials between stages; the trials have 1 stage"):
        scheduler(sweep, stages=1)
    assert math.isclose(asha._reduction_factor, 3)
