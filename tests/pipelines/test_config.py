"""Config: YAML loading, --set overrides checked against types, invariants, shipped configs."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.config import ConfigError, PipelineConfig, flatten, from_dict, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

MINIMAL = """
pipeline_id: t
stages:
  - {name: base, iterations: 4}
  - {name: gated, iterations: 2, multipool: res5, gated: [res5], rho: 0.5}
"""


@pytest.fixture
def cfg_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL)
    return path


def test_defaults_fill_missing_fields(cfg_file):
    cfg = load_config(cfg_file)
    assert cfg.pipeline_id == "t"
    assert cfg.train.poly_power == 0.9  # paper's poly exponent
    assert cfg.stages[0].lr == 2e-4  # paper's base LR
    assert cfg.stages[0].lam == 1e-4  # paper's lambda
    assert (cfg.stages[1].tau_start, cfg.stages[1].tau_end) == (1.0, 0.1)
    assert cfg.stages[1].gated == ("res5",)


def test_override_by_stage_name_and_index(cfg_file):
    cfg = load_config(cfg_file, ["stages.gated.rho=0.7", "stages.0.iterations=9", "train.seed=3"])
    assert cfg.stages[1].rho == 0.7
    assert cfg.stages[0].iterations == 9
    assert cfg.train.seed == 3


def test_override_int_into_float_field_and_list_value(cfg_file):
    cfg = load_config(cfg_file, ["stages.base.lr=1", "data.crop=[32, 48]"])
    assert cfg.stages[0].lr == 1.0 and isinstance(cfg.stages[0].lr, float)
    assert cfg.data.crop == (32, 48)


def test_null_override_for_optional(cfg_file):
    cfg = load_config(cfg_file, ["tracking.tracking_uri=http://127.0.0.1:5000"])
    assert cfg.tracking.tracking_uri == "http://127.0.0.1:5000"
    cfg = load_config(cfg_file, ["model.pretrained=null"])
    assert cfg.model.pretrained is None


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.seed=abc", ["train.seed", "'abc'", "integer"]),
        ("train.bf16=3", ["train.bf16", "true or false"]),
        ("model.backbone=vgg", ["model.backbone", "'vgg'", "resnet50", "resnet_tiny"]),
        ("stages.gated.gated=[res9]", ["stages.1.gated.0", "'res9'", "res5"]),
        ("train.nope=1", ["train.nope", "allowed", "seed"]),
        ("stages.missing.rho=0.1", ["stages.missing", "no entry named", "base"]),
        ("stages.7.rho=0.1", ["stages.7", "out of range"]),
        ("data.crop=[30, 32]", ["data.crop", "multiples of 8"]),
        ("stages.gated.rho=1.5", ["stages.gated.rho=1.5", "(0, 1]"]),
        ("stages.base.iterations=0", ["stages.base.iterations=0", "> 0"]),
        ("seed", ["key.sub=value"]),
    ],
)
def test_bad_override_names_key_value_and_allowed(cfg_file, override, words):
    with pytest.raises(ConfigError) as info:
        load_config(cfg_file, [override])
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


def test_stage_chain_invariants():
    base = {"name": "base", "iterations": 1}
    with pytest.raises(ConfigError, match="unique"):
        from_dict({"stages": [base, base]})
    with pytest.raises(ConfigError, match="drops \\['res4'\\]"):
        from_dict({"stages": [
            {"name": "a", "iterations": 1, "gated": ["res4", "res5"], "rho": 0.9},
            {"name": "b", "iterations": 1, "gated": ["res5"], "rho": 0.9},
        ]})
    with pytest.raises(ConfigError, match="multipool"):
        from_dict({"stages": [
            {"name": "a", "iterations": 1, "multipool": "res5"},
            {"name": "b", "iterations": 1},
        ]})
    with pytest.raises(ConfigError, match="needs gated"):
        from_dict({"stages": [{"name": "a", "iterations": 1, "rho": 0.5}]})
    with pytest.raises(ConfigError, match="at least one stage"):
        from_dict({})


def test_round_trip_and_flatten(cfg_file):
    cfg = load_config(cfg_file)
    again = from_dict(cfg.to_dict())
    assert again == cfg
    flat = flatten(cfg.to_dict())
    assert flat["stages.gated.rho"] == 0.5
    assert flat["train.poly_power"] == 0.9
    assert flat["model.backbone"] == "resnet_tiny"
    assert not any(isinstance(v, dict) for v in flat.values())


# Staged-pipeline configs; files with a top-level `sweep` section belong to the sweep's schema.
STAGED_CONFIGS = [p for p in sorted(CONFIGS.glob("*.yaml")) if "sweep" not in (yaml.safe_load(p.read_text()) or {})]


def test_every_paper_setting_is_shipped():
    names = {p.stem for p in STAGED_CONFIGS}
    assert {"demo", "nyuv2_seg", "nyuv2_depth", "nyuv2_normals", "bsds", "stanford2d3d", "cityscapes"} <= names


@pytest.mark.parametrize("path", STAGED_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig)
    rhos = [s.rho for s in cfg.stages if s.rho is not None]
    assert rhos == sorted(rhos, reverse=True), "rho only decreases along the curriculum"
    if path.name != "demo.yaml":
        # The paper's values (Section 4 and Eq. 6).
        assert cfg.model.backbone == "resnet50"
        assert cfg.train.batch_size == 1 and cfg.train.poly_power == 0.9
        assert {s.lr for s in cfg.stages} == {2e-4}
        assert {s.lam for s in cfg.stages if s.rho is not None} == {1e-4}
        assert {(s.tau_start, s.tau_end) for s in cfg.stages} == {(1.0, 0.1)}
        assert all(c % 8 == 0 for c in cfg.data.crop)


@pytest.mark.parametrize(
    "override, words",
    [
        ("stages.base.lr=.nan", ["stages.0.lr=nan", "finite number"]),
        ("stages.base.lr=.inf", ["stages.0.lr=inf", "finite number"]),
        ("train.momentum=-0.1", ["train.momentum=-0.1", ">= 0"]),
        ("train.weight_decay=-1", ["train.weight_decay=-1.0", ">= 0"]),
        ("train.poly_power=-0.9", ["train.poly_power=-0.9", ">= 0"]),
        ("train.max_failures=-1", ["train.max_failures=-1", ">= 0"]),
        ("train.eval_every=-5", ["train.eval_every=-5", ">= 0"]),
        ("data.eval_images=-1", ["data.eval_images=-1", ">= 0"]),
        ("model.head_channels=0", ["model.head_channels=0", "> 0"]),
        ("model.tasks=[]", ["model.tasks=[]", "at least one task"]),
        ("pipeline_id=o'brien", ["pipeline_id=\"o'brien\"", "letters, digits"]),
        ("pipeline_id=../x", ["pipeline_id='../x'", "letters, digits"]),
    ],
)
def test_bad_values_fail_before_anything_starts(cfg_file, override, words):
    """Issue 12's early errors: each names the key, the value and what is allowed."""
    with pytest.raises(ConfigError) as info:
        load_config(cfg_file, [override])
    for word in words:
        assert word in str(info.value), (word, str(info.value))
