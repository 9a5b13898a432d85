"""The sweep section: parsing, clear errors, and what each trial's config becomes."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from pipelines.config import ConfigError
from pipelines.sweeps.space import (
    check_space,
    decode_blocks,
    encode_blocks,
    expected_trials,
    max_concurrent,
    trial_config,
    trial_values,
)
from pipelines.config import load_sweep_config, parse_param, parse_sweep

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, sweep: dict, stages: list | None = None, **top) -> Path:
    config = {
        "storage_path": str(tmp_path / "store"),
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.45},
        "stages": stages
        or [
            {"name": "gates", "iterations": 10, "multipool": "res5", "gated": ["res4", "res5"], "rho": 0.9},
            {"name": "target", "iterations": 20, "multipool": "res5", "gated": ["res4", "res5"], "rho": 0.7},
        ],
        "sweep": {"base": "/some/checkpoint", **sweep},
        **top,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_shipped_paper_sweep_config_loads():
    pipeline, sweep = load_sweep_config(REPO / "configs" / "nyuv2_seg_sweep.yaml")
    check_space(pipeline, sweep)
    assert sweep.space["lam"].log and (sweep.space["lam"].low, sweep.space["lam"].high) == (1e-5, 1e-2)  # paper
    assert sweep.base == "curriculum:multipool"


def test_shipped_demo_sweep_is_a_grid_whose_rho_spans_the_front():
    pipeline, sweep = load_sweep_config(REPO / "configs" / "sweep_demo.yaml")
    check_space(pipeline, sweep)
    assert sweep.algorithm == "grid" and sweep.base == "curriculum:base"
    rhos = sweep.space["rho"].choices
    assert min(rhos) <= 0.3 and max(rhos) == 1.0  # 0.34 + 0.66 rho of dense MACs: 0.54..1.0
    assert all(1e-3 <= lam <= 1e-2 for lam in sweep.space["lam"].choices)
    assert pipeline.model.backbone == "resnet_demo" and all(s.calibrate for s in pipeline.stages)


def test_forms_of_a_searched_value():
    assert parse_param("lam", 1e-3).value == 1e-3
    lam = parse_param("lam", {"low": 1e-5, "high": 1e-2, "log": True})
    assert (lam.low, lam.high, lam.log, lam.searched) == (1e-5, 1e-2, True, True)
    gated = parse_param("gated", {"choices": [["res5", "res4"], ["res5"]]})
    assert gated.choices == (("res4", "res5"), ("res5",))


@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"space": {"lamda": 1e-3}}, "sweep.space.lamda"),
        ({"space": {"rho": 1.5}}, r"sweep.space.rho=1.5: expected a number in \(0, 1\]"),
        ({"space": {"lam": {"low": 1e-2, "high": 1e-5}}}, "low=0.01 must be below high=1e-05"),
        ({"space": {"lam": {"low": 1e-5}}}, "needs both low and high"),
        ({"space": {"tau_shape": {"low": 0, "high": 1}}}, "categorical"),
        ({"space": {"gated": {"choices": [["res9"]]}}}, r"sweep.space.gated.choices.0=\['res9'\]"),
        ({"algorithm": "grid", "space": {"lam": {"low": 1e-5, "high": 1e-2}}}, "grid search needs a `choices` list"),
        ({"algorithm": "bayes"}, "sweep.algorithm='bayes'"),
        ({"trial_cpus": 0}, "sweep.trial_cpus=0.0: must be > 0"),
        ({"budgets": [0.7, 1.5]}, r"sweep.budgets.1=1.5: expected a fraction in \(0, 1\]"),
        ({"base": ""}, "sweep.base is required"),
        ({"base": "curriculum:multipool"}, "needs sweep.curriculum"),
        ({"asha": {"grace": 1}}, "sweep.asha.grace"),
        ({"sweep_id": "a.b"}, "sweep.sweep_id='a.b'"),
        ({"num_samples": 0}, "sweep.num_samples=0: expected an integer >= 1"),
    ],
)
def test_bad_sweep_sections_name_key_and_value(tmp_path, sweep, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_sweep_config(write(tmp_path, sweep))
    assert str(tmp_path / "sweep.yaml") in str(info.value)


def test_missing_sweep_section_and_stage_without_rho(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump({"stages": [{"name": "a", "iterations": 1}]}))
    with pytest.raises(ConfigError, match="a `sweep:` mapping is required"):
        load_sweep_config(path)
    stages = [{"name": "plain", "iterations": 5, "multipool": "res5"}]
    with pytest.raises(ConfigError, match="stages.plain: a trial stage needs rho"):
        load_sweep_config(write(tmp_path, {}, stages=stages))


def test_overrides_reach_both_sections(tmp_path):
    pipeline, sweep = load_sweep_config(
        write(tmp_path, {"num_samples": 8}), ["sweep.num_samples=3", "stages.target.iterations=7"]
    )
    assert sweep.num_samples == 3
    assert pipeline.stages[1].iterations == 7


def test_trial_config_carries_the_values(tmp_path):
    pipeline, sweep = load_sweep_config(write(tmp_path, {"space": {"tau_start": 2.0}}))
    values = {"lam": 3e-4, "rho": 0.5, "tau_end": 0.2, "tau_shape": "cosine", "gated": ("res5",)}
    trial = trial_config(pipeline, {**trial_values(sweep, {}), **values}, "t1", "/store/trials")
    assert trial.pipeline_id == "t1" and trial.storage_path == "/store/trials"
    gates, target = trial.stages
    # rho is the last stage's target; the earlier stage keeps its own, higher density.
    assert (gates.rho, target.rho) == (0.9, 0.5)
    for stage in trial.stages:
        assert (stage.lam, stage.tau_start, stage.tau_end, stage.tau_shape, stage.gated) == (
            3e-4, 2.0, 0.2, "cosine", ("res5",)
        )
    # A target above an earlier stage's rho caps that stage: density never rises.
    capped = trial_config(pipeline, {"rho": 0.95}, "t2", "/s")
    assert [s.rho for s in capped.stages] == [0.95, 0.95]


def test_trial_values_merge_fixed_and_decode_blocks():
    sweep = parse_sweep(
        {"base": "/b", "space": {"tau_start": 1.0, "gated": {"choices": [["res5"], ["res4", "res5"]]}}}
    )
    assert encode_blocks(("res4", "res5")) == "res4+res5"
    assert decode_blocks("res4+res5") == ("res4", "res5")
    assert trial_values(sweep, {"gated": "res4+res5", "unrelated": 1}) == {"tau_start": 1.0, "gated": ("res4", "res5")}


def test_check_space_refuses_a_tau_that_could_rise(tmp_path):
    pipeline, sweep = load_sweep_config(
        write(tmp_path, {"space": {"tau_start": {"choices": [0.5, 1.0]}, "tau_end": {"low": 0.1, "high": 0.8}}})
    )
    with pytest.raises(ConfigError, match="tau_end can reach 0.8 above tau_start's 0.5"):
        check_space(pipeline, sweep)


def test_expected_trials():
    grid = parse_sweep({"base": "/b", "algorithm": "grid", "num_samples": 2,
                        "space": {"lam": {"choices": [1e-3, 1e-2, 1e-1]}, "rho": {"choices": [0.5, 0.7]}, "tau_end": 0.1}})
    assert expected_trials(grid) == 2 * 3 * 2
    assert expected_trials(parse_sweep({"base": "/b", "num_samples": 5, "space": {"lam": {"choices": [1, 2]}}})) == 5


def test_concurrency_from_cluster_resources(tmp_path):
    pipeline, sweep = load_sweep_config(write(tmp_path, {"trial_cpus": 0.05}))
    # (2 CPUs - 1 for Ray Data) / (0.05 + 1 x 0.45) = 2 trials.
    assert max_concurrent(sweep, pipeline, {"CPU": 2.0}) == 2
    # (16 - 1) / 0.5 = 30, capped by the config.
    assert max_concurrent(sweep, pipeline, {"CPU": 16.0}) == 30
    capped, _ = load_sweep_config(write(tmp_path, {"trial_cpus": 0.05, "max_concurrent": 3}))
    _, sweep3 = load_sweep_config(write(tmp_path, {"trial_cpus": 0.05, "max_concurrent": 3}))
    assert max_concurrent(sweep3, capped, {"CPU": 16.0}) == 3
    # GPUs bound it too: 2 workers x 1 GPU each on 5 GPUs -> 2 trials.
    gpu, sweep_g = load_sweep_config(
        write(tmp_path, {"trial_cpus": 1.0}, scaling={"num_workers": 2, "cpus_per_worker": 2, "use_gpu": True})
    )
    assert max_concurrent(sweep_g, gpu, {"CPU": 64.0, "GPU": 5.0}) == math.floor(5 / 2)
    with pytest.raises(ConfigError, match="one trial needs 5 CPUs .* the cluster has 2 CPUs"):
        max_concurrent(sweep_g, gpu, {"CPU": 2.0, "GPU": 1.0})


def test_command_line_rejects_a_bad_config_before_starting_ray(tmp_path, capsys):
    from pipelines.sweep import main

    path = write(tmp_path, {"space": {"rho": 2.0}})
    assert main(["--config", str(path), "--sweep-id", "cli"]) == 2
    err = capsys.readouterr().err
    assert "sweep.space.rho=2.0" in err and str(path) in err


@pytest.mark.slow
def test_script_entry_point_runs_from_the_repository_root():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "pipelines/sweep.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "--sweep-id" in out.stdout and "--config" in out.stdout


def test_sweep_section_round_trips_through_its_dict():
    # Trials rebuild the section from this dict (it travels through tune.with_parameters).
    _, sweep = load_sweep_config(REPO / "configs" / "nyuv2_seg_sweep.yaml")
    again = parse_sweep(yaml.safe_load(yaml.safe_dump(sweep.to_dict())))
    assert again == sweep
