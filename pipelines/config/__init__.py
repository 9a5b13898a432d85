"""Typed pipeline configuration: one schema and one parser for curricula and sweeps.

One place holds every setting of a staged run or sweep (nanoGPT / Made-With-ML style): the
YAML file under `configs/` is read into `PipelineConfig` (with a `sweep:` section for a
sweep), `--set key.sub=value` overrides are applied on top and checked against the field
types, and the resolved config is logged whole.

    schema.py  the dataclasses          sweep.py   the `sweep:` section and its space
    parse.py   YAML, overrides, types   checks.py  invariants across fields
"""
from pipelines.config.checks import validate, validate_sweep
from pipelines.config.errors import ConfigError
from pipelines.config.parse import (
    apply_override,
    flatten,
    from_dict,
    load_config,
    load_sweep_config,
    parse_sweep,
    read_yaml_mapping,
)
from pipelines.config.schema import (
    DataConfig,
    ModelConfig,
    PipelineConfig,
    ScalingConfig,
    StageConfig,
    TrackingConfig,
    TrainConfig,
)
from pipelines.config.sweep import AshaConfig, Param, SweepConfig, parse_param

__all__ = [
    "AshaConfig", "ConfigError", "DataConfig", "ModelConfig", "Param", "PipelineConfig", "ScalingConfig",
    "StageConfig", "SweepConfig", "TrackingConfig", "TrainConfig", "apply_override", "flatten", "from_dict",
    "load_config", "load_sweep_config", "parse_param", "parse_sweep", "read_yaml_mapping", "validate",
    "validate_sweep",
]
