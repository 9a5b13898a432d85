"""Repeating a curriculum's comparison over seeds, in one pipeline.

The stages that branch off an earlier one (`init` set: PAG, the baselines, the dense
control, all from one checkpoint) are the comparison; `repeat_over_seeds` repeats them once
per seed, named `<stage>-s<seed>` with `seed` set, each still starting from the same stage
(so every seed compares the methods from one checkpoint) and a `match` pointing at its own
seed's stage. Stages before the branch are trained once.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from pipelines.config.checks import validate
from pipelines.config.errors import ConfigError
from pipelines.config.schema import PipelineConfig, StageConfig


def repeat_over_seeds(config: PipelineConfig, seeds: Sequence[int]) -> PipelineConfig:
    """`config` with its branching stages repeated per seed (see the module docstring).

    Raises:
        ConfigError: no stage branches off (nothing to repeat), or no seed given.
    """
    if not seeds:
        raise ConfigError("seeds: at least one seed is required")
    trunk = [s for s in config.stages if s.init is None]
    branches = [s for s in config.stages if s.init is not None]
    if not branches:
        raise ConfigError("stages: no stage has `init`, so there is no comparison to repeat over seeds")
    names = {s.name for s in branches}
    repeated: list[StageConfig] = []
    for seed in seeds:
        for stage in branches:
            repeated.append(replace(
                stage,
                name=seeded_name(stage.name, seed),
                seed=seed,
                init=seeded_name(stage.init, seed) if stage.init in names else stage.init,
                match=seeded_name(stage.match, seed) if stage.match in names else stage.match,
            ))
    out = replace(config, stages=[*trunk, *repeated])
    validate(out)
    return out


def seeded_name(name: str, seed: int) -> str:
    """`pag-rho-0_5`, 1 -> `pag-rho-0_5-s1`."""
    return f"{name}-s{seed}"


def unseeded(stage: StageConfig) -> tuple[str, int | None]:
    """(the repeated stage's own name, its seed) of a stage made by `repeat_over_seeds`;
    (name, None) for any other stage."""
    suffix = f"-s{stage.seed}"
    if stage.seed is not None and stage.name.endswith(suffix):
        return stage.name[: -len(suffix)], stage.seed
    return stage.name, None
