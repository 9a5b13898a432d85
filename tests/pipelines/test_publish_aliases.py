"""Publishing the curriculum's front: one registry alias per stage (two stages at the same rho
do not collide), a champion per pipeline (pipelines sharing a registered-model name do not
move each other's), and a parent run that ends FAILED when publishing fails.

The stages are "done" (records written here with hand-set metrics, models logged to their
MLflow runs), so `run_pipeline` goes straight to publishing: no Ray, a real SQLite store.
"""
from __future__ import annotations

from dataclasses import asdict

import pytest
from mlflow.tracking import MlflowClient

from pipelines.checkpoint import build_model
from pipelines.tracking.tracker import Tracker, default_tracking_uri
from pipelines.train.curriculum import run_pipeline
from pipelines.train.stages import StageError, StageRecord, write_record
from tests.support.staged_data import tiny_config

STAGES = (
    "[{name: base, iterations: 2, lr: 0.01},"
    " {name: sparse-a, iterations: 2, lr: 0.01, multipool: res5, gated: [res5], rho: 0.9, lam: 0.002},"
    " {name: sparse-b, iterations: 2, lr: 0.01, multipool: res5, gated: [res5], rho: 0.9, lam: 0.01}]"
)
NAME = "shared-model"


def _done_pipeline(tmp_path, pipeline_id, metrics):
    """A config whose stages all have done records; metrics: stage -> dict (dense_macs 10)."""
    config = tiny_config(
        tmp_path / "no-data", tmp_path, STAGES,
        extra=[f"pipeline_id={pipeline_id}", f"tracking.registered_model={NAME}", "tracking.budget=0.8"],
    )
    tracker = Tracker(default_tracking_uri(config.storage_path), config.tracking.experiment)
    parent = tracker.parent_run(pipeline_id, config.to_dict())
    model = config.to_dict()["model"]
    for index, stage in enumerate(config.stages):
        run = tracker.child_run(parent, pipeline_id, stage.name, {})
        net = build_model(model, asdict(stage))
        uri = tracker.log_model(run, net, model, asdict(stage))
        write_record(config, StageRecord(stage.name, index, f"/ckpt/{stage.name}", 2, run, metrics[stage.name], uri))
        tracker.finish(run)
    return config, tracker


def _metrics(macs, miou):
    return {"macs": macs, "dense_macs": 10.0, "semantic/miou": miou, "macs_ratio": macs / 10.0}


def test_aliases_are_per_stage_and_champions_per_pipeline(tmp_path):
    a_config, tracker = _done_pipeline(
        tmp_path, "pa",
        {"base": _metrics(10, 0.4), "sparse-a": _metrics(9, 0.5), "sparse-b": _metrics(5, 0.6)},
    )
    a = run_pipeline(a_config, progress=lambda _: None)
    client = MlflowClient(tracker.tracking_uri)
    alias = lambda name: client.get_model_version_by_alias(NAME, name)  # noqa: E731
    # Both stages train at rho 0.9: each keeps its own version.
    va, vb = alias("pa-sparse-a"), alias("pa-sparse-b")
    assert va.version != vb.version
    assert (va.tags["pag_stage"], vb.tags["pag_stage"]) == ("sparse-a", "sparse-b")
    # Budget 0.8 x 10 = 8 multiply-adds: sparse-b (5, 0.6) is the best within it.
    assert alias("pa-champion").version == vb.version and a.champion.name == "sparse-b"

    b_config, _ = _done_pipeline(
        tmp_path, "pb",
        {"base": _metrics(10, 0.4), "sparse-a": _metrics(7, 0.7), "sparse-b": _metrics(6, 0.65)},
    )
    run_pipeline(b_config, progress=lambda _: None)
    # pb's champion is its sparse-a (7 <= 8, 0.7); pa's champion has not moved.
    pb_champion = alias("pb-champion")
    assert (pb_champion.tags["pag_pipeline_id"], pb_champion.tags["pag_stage"]) == ("pb", "sparse-a")
    pa_champion = alias("pa-champion")
    assert pa_champion.version == vb.version and pa_champion.tags["pag_pipeline_id"] == "pa"
    assert alias("pa-sparse-a").version == va.version
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 4


def test_parent_run_ends_failed_when_publishing_fails(tmp_path):
    # A record without the front metric (e.g. written by an older version): publishing fails.
    config, tracker = _done_pipeline(
        tmp_path, "pf",
        {"base": _metrics(10, 0.4), "sparse-a": {"macs": 9.0, "dense_macs": 10.0}, "sparse-b": _metrics(5, 0.6)},
    )
    with pytest.raises(StageError, match="tracking.front_metric='semantic/miou': stage sparse-a has no such metric"):
        run_pipeline(config, progress=lambda _: None)
    client = MlflowClient(tracker.tracking_uri)
    exp = client.get_experiment_by_name(config.tracking.experiment)
    parents = client.search_runs([exp.experiment_id], "tags.pag_kind = 'pipeline' and tags.pag_pipeline_id = 'pf'")
    assert [r.info.status for r in parents] == ["FAILED"]
