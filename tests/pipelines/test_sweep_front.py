"""Sweep-specific front logic on hand-built points: budget aliases, which trials count, the
curriculum's stages joining the front, the trial table and the labelled plot.

pipelines/tracking/front.py's own tests cover the non-dominated set (ties, duplicates, one point, all
dominated); these check what the sweep builds on top of it, with the expected answers worked
out by hand in each test.
"""
from __future__ import annotations

import csv

import pytest
import yaml

from pipelines.tracking.front import FrontPoint
from pipelines.train.stages import StageRecord, write_record
from pipelines.sweeps.publish import (
    SweepResult,
    TrialRow,
    trial_points,
    budget_alias,
    budget_aliases,
    curriculum_points,
    summary_table,
    write_trials_csv,
)
from pipelines.config import parse_sweep
from pipelines.sweeps.plot import plot_sweep, point_label


def P(name, cost, score, dense=100.0, **extra):
    return FrontPoint(name, float(cost), float(score), {"dense_macs": dense, **extra})


def test_budget_alias_names_are_registry_safe():
    assert budget_alias(0.7) == "flops-0_7"
    assert budget_alias(1.0) == "flops-1"
    assert budget_alias(0.25) == "flops-0_25"


def test_best_front_point_within_each_budget():
    # d is dominated by b (same cost, lower score); budgets are fractions of dense = 100.
    pts = [P("a", 40, 0.50), P("b", 60, 0.70), P("c", 80, 0.72), P("d", 60, 0.65)]
    aliases = budget_aliases(pts, [0.3, 0.5, 0.7, 0.9])
    assert aliases == {"flops-0_5": "a", "flops-0_7": "b", "flops-0_9": "c"}  # nothing costs <= 30


def test_budget_uses_the_largest_dense_cost():
    # Dense costs differ per point (measured on each model); the budget base is the largest.
    pts = [P("a", 40, 0.5, dense=80), P("b", 90, 0.8, dense=200)]
    assert budget_aliases(pts, [0.25, 0.5]) == {"flops-0_25": "a", "flops-0_5": "b"}


def test_exact_duplicates_alias_the_first_name():
    pts = [P("e2", 50, 0.6), P("e1", 50, 0.6), P("f", 90, 0.55)]
    assert budget_aliases(pts, [0.5, 1.0]) == {"flops-0_5": "e1", "flops-1": "e1"}


def test_one_point_and_all_dominated_but_one():
    assert budget_aliases([P("only", 70, 0.1)], [0.6, 0.7]) == {"flops-0_7": "only"}
    pts = [P("best", 10, 0.9)] + [P(f"p{i}", 20 + i, 0.5) for i in range(4)]
    assert budget_aliases(pts, [0.1, 0.5, 1.0]) == {"flops-0_1": "best", "flops-0_5": "best", "flops-1": "best"}
    assert budget_aliases([], [0.5]) == {}


def _done(trial_id, cost, score, **values):
    metrics = {
        "score": score, "macs": cost, "macs_ratio": cost / 100, "dense_macs": 100.0, "rho": values.get("rho", 0.5),
        "model_uri": f"models:/m-{trial_id}", "stage": "target", "run_id": f"run-{trial_id}",
    }
    return TrialRow(trial_id, "done", values, metrics)


def test_only_finished_trials_become_points():
    rows = [
        _done("t1", 50.0, 0.4, lam=1e-3, rho=0.5, gated=("res4", "res5")),
        # Raised in its second stage: it reported a first-stage score but did not finish.
        TrialRow("t2", "error", {"lam": 1e300}, {"score": 0.9, "macs": 10.0}, "StageError: non-finite loss"),
        TrialRow("t3", "no result", {"lam": 1e-2}, {}),
    ]
    points = trial_points(rows)
    assert [p.name for p in points] == ["t1"]
    p = points[0]
    assert (p.cost, p.score) == (50.0, 0.4)
    assert p.extra["lam"] == 1e-3 and p.extra["rho"] == 0.5 and p.extra["gated"] == ["res4", "res5"]
    assert p.extra["model_uri"] == "models:/m-t1" and p.extra["source"] == "trial"


def test_trial_table_csv(tmp_path):
    rows = [
        _done("t1", 50.0, 0.4, lam=1e-3, gated=("res4", "res5")),
        TrialRow("t0", "error", {"lam": 1e300}, {}, "Traceback ...\nNonFiniteLossError: stage 'target': non-finite loss"),
    ]
    path = write_trials_csv(rows, tmp_path / "trials.csv")
    table = list(csv.DictReader(path.open()))
    assert [r["trial_id"] for r in table] == ["t0", "t1"]
    assert table[0]["status"] == "error" and table[0]["error"] == "NonFiniteLossError: stage 'target': non-finite loss"
    assert table[1]["gated"] == "res4+res5" and float(table[1]["macs"]) == 50.0 and table[1]["score"] == "0.4"
    assert not list(tmp_path.glob(".*tmp"))


def test_curriculum_rho_stages_join_the_front(tmp_path):
    staged = {
        "pipeline_id": "cur",
        "storage_path": str(tmp_path / "runs"),
        "stages": [
            {"name": "base", "iterations": 5},
            {"name": "multipool", "iterations": 5, "multipool": "res5"},
            {"name": "rho-0_7", "iterations": 5, "multipool": "res5", "gated": ["res5"], "rho": 0.7, "lam": 0.01},
            {"name": "rho-0_5", "iterations": 5, "multipool": "res5", "gated": ["res5"], "rho": 0.5, "lam": 0.01},
        ],
    }
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(staged))
    from pipelines.config import load_config

    config = load_config(path)
    metrics = {"semantic/miou": 0.3, "macs": 70.0, "macs_ratio": 0.7, "dense_macs": 100.0}
    write_record(config, StageRecord("base", 0, "/ck/base", 5, metrics={**metrics, "macs": 100.0}))
    write_record(config, StageRecord("rho-0_7", 2, "/ck/r7", 5, "run", metrics, "models:/m-r7"))
    # rho-0_5 has not finished: no record, no point.
    sweep = parse_sweep({"base": "curriculum:multipool", "curriculum": str(path)})
    from pipelines.config import PipelineConfig

    points = curriculum_points(sweep, PipelineConfig(stages=config.stages))
    assert [(p.name, p.cost, p.score) for p in points] == [("curriculum-rho-0_7", 70.0, 0.3)]
    assert points[0].extra["rho"] == 0.7 and points[0].extra["model_uri"] == "models:/m-r7"
    assert points[0].extra["source"] == "curriculum"


def test_labels_and_plot(tmp_path):
    pts = [
        P("t1", 50e6, 0.4, rho=0.5, lam=1e-3, source="trial"),
        P("t2", 70e6, 0.3, rho=0.7, lam=1e-2, source="trial"),
        P("curriculum-rho-0_5", 45e6, 0.45, rho=0.5, lam=1e-2, source="curriculum"),
    ]
    assert point_label(pts[0]) == "ρ=0.5, λ=1e-03"
    assert point_label(P("x", 1, 1)) == "x"
    png = plot_sweep(pts, tmp_path / "front.png", "semantic/miou")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = SweepResult(
        trials=[TrialRow("t9", "error", {}, {}, "x\nStageError: boom")], points=pts, front=[pts[2]],
        aliases={"flops-0_5": "curriculum-rho-0_5"}, versions={}, registered_model="m", tracking_uri="u",
        parent_run_id="p",
    )
    table = summary_table(result)
    assert "curriculum-rho-0_5" in table.splitlines()[1] and "flops-0_5" in table.splitlines()[1]
    assert "StageError: boom" in table.splitlines()[-1]


@pytest.mark.parametrize("bad", ["/no/such/dir"])
def test_base_must_be_a_checkpoint(tmp_path, bad):
    from pipelines.config import ConfigError, PipelineConfig, StageConfig
    from pipelines.sweeps.base import resolve_base

    sweep = parse_sweep({"base": bad})
    pipeline = PipelineConfig(stages=[StageConfig("s", 1, gated=("res5",), rho=0.5)])
    with pytest.raises(ConfigError, match="sweep.base='/no/such/dir': no state.pt there"):
        resolve_base(sweep, pipeline, "sqlite:///x.db", str(tmp_path / "base"))
