"""Tracking against a real MLflow server (SQLite backend) and a SQLite store without a server."""
from __future__ import annotations

import csv
import uuid

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipelines.checkpoint import build_model
from pipelines.tracking.front import FrontPoint, plot_front
from pipelines.tracking.load import load_model
from pipelines.tracking.publish import publish_front
from pipelines.tracking.tracker import (
    PARENT_TAG,
    RankZeroLogger,
    Tracker,
    default_artifact_location,
    default_tracking_uri,
)
from tests.support.mlflow_server import mlflow_server  # noqa: F401
from tests.support.sweep import MODEL

pytestmark = pytest.mark.slow


@pytest.fixture
def tracker(mlflow_server):  # noqa: F811
    return Tracker(mlflow_server.uri, f"exp-{uuid.uuid4().hex[:8]}")


def test_parent_and_child_runs_are_found_again(tracker):
    config = {"pipeline_id": "p1", "train": {"seed": 3}, "stages": [{"name": "base", "iterations": 2}]}
    parent = tracker.parent_run("p1", config)
    assert tracker.parent_run("p1", config) == parent
    child = tracker.child_run(parent, "p1", "base", {"stage": {"name": "base", "iterations": 2}})
    assert tracker.child_run(parent, "p1", "base", {"stage": {"name": "base"}}) == child
    other = tracker.child_run(parent, "p1", "gated", {})
    assert other != child

    client = MlflowClient(tracker.tracking_uri)
    run = client.get_run(parent)
    assert run.data.params["train.seed"] == "3"
    assert run.data.params["stages.base.iterations"] == "2"
    assert client.get_run(child).data.tags[PARENT_TAG] == parent
    assert client.get_run(child).data.params["stage.iterations"] == "2"
    runs = client.search_runs([tracker.experiment_id])
    assert len(runs) == 3
    arts = [a.path for a in client.list_artifacts(parent, "config")]
    assert arts == ["config/resolved_config.json"]
    tracker.finish(child)
    assert client.get_run(child).info.status == "FINISHED"


def test_rank_zero_logger_logs_only_on_rank_zero(tracker):
    parent = tracker.parent_run("p2", {})
    child = tracker.child_run(parent, "p2", "s", {})
    for rank in (1, 0):
        logger = RankZeroLogger(tracker.tracking_uri, child, rank)
        for step in (0, 10, 20):
            logger.log_metrics({"loss": 100.0 * rank + step, "bad": float("nan")}, step)
    history = MlflowClient(tracker.tracking_uri).get_metric_history(child, "loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.0), (10, 10.0), (20, 20.0)]
    assert MlflowClient(tracker.tracking_uri).get_metric_history(child, "bad") == []


def test_front_csv_and_png_on_parent(tracker, tmp_path):
    parent = tracker.parent_run("p3", {})
    points = [FrontPoint("rho-0_9", 9.0, 0.5), FrontPoint("rho-0_7", 7.0, 0.55), FrontPoint("rho-0_5", 5.0, 0.4)]
    publish_front(tracker, parent, points, "mIoU", plot_front, "unused", "p3", register=[], aliases_of={})
    client = MlflowClient(tracker.tracking_uri)
    assert sorted(a.path for a in client.list_artifacts(parent, "front")) == ["front/front.csv", "front/front.png"]
    local = client.download_artifacts(parent, "front/front.csv", str(tmp_path))
    rows = {r["name"]: r["on_front"] for r in csv.DictReader(open(local))}
    # rho-0_9 costs more and scores less than rho-0_7: dominated.
    assert rows == {"rho-0_9": "False", "rho-0_7": "True", "rho-0_5": "True"}


def test_model_logged_registered_and_loaded_by_alias(tracker):
    name = f"m-{uuid.uuid4().hex[:8]}"
    parent = tracker.parent_run("p4", {})
    child = tracker.child_run(parent, "p4", "rho-0_5", {})
    stage = {"multipool": "res5", "gated": ["res5"]}
    net = build_model(MODEL, stage).eval()
    uri = tracker.log_model(child, net, MODEL, stage)
    tags = {"pag_pipeline_id": "p4", "pag_stage": "rho-0_5", "macs": 123.0}
    version = tracker.register(name, uri, ["rho-0_5", "champion"], tags)
    # Same stage registered again (a re-run): the same version, no duplicate.
    assert tracker.register(name, uri, ["rho-0_5"], tags) == version

    client = MlflowClient(tracker.tracking_uri)
    mv = client.get_model_version_by_alias(name, "champion")
    assert mv.version == version and mv.tags["macs"] == "123.0"
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    # Nothing pickled: tensors in safetensors, settings in JSON.
    files = sorted(a.path for a in client.list_artifacts(child, "model"))
    assert files == ["model/model.json", "model/weights.safetensors"]

    for ref in (f"models:/{name}@rho-0_5", f"models:/{name}/{version}", uri):
        loaded = load_model(ref, tracker.tracking_uri)
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            expected, got = net(x), loaded(x)
        assert got.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], msg=key)


def test_load_model_rejects_bad_uris_by_name(tracker):
    with pytest.raises(ValueError, match="models:/NAME@ALIAS"):
        load_model("models:/no-alias-or-version", tracker.tracking_uri)
    with pytest.raises(ValueError, match="tracking URI"):
        load_model("models:/m@champion", None)


def test_logging_and_registering_leave_the_callers_mlflow_globals_alone(tracker, tmp_path, monkeypatch):
    """A notebook pointed at its own store keeps it after the library logs and registers a
    model on another server; the environment its subprocesses inherit is unchanged too."""
    import os

    own = (tmp_path / "notebook-store").as_uri()
    mlflow.set_tracking_uri(own)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    parent = tracker.parent_run("p6", {})
    child = tracker.child_run(parent, "p6", "rho-0_5", {})
    stage = {"multipool": None, "gated": []}
    uri = tracker.log_model(child, build_model(MODEL, stage), MODEL, stage)
    tracker.register(f"m-{uuid.uuid4().hex[:8]}", uri, ["champion"], {"pag_pipeline_id": "p6", "pag_stage": "rho-0_5"})

    assert mlflow.get_tracking_uri() == own
    assert mlflow.get_registry_uri() == own  # defaults to the tracking URI: nothing was set
    assert os.environ["MLFLOW_TRACKING_URI"] == own
    assert "MLFLOW_REGISTRY_URI" not in os.environ and "MLFLOW_EXPERIMENT_ID" not in os.environ
    tracker.finish(child)
    assert "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT" not in os.environ  # quiet only while we end runs


def test_sqlite_default_store_in_run_directory(tmp_path):
    uri = default_tracking_uri(str(tmp_path / "runs"))
    assert uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert default_artifact_location(uri) == (tmp_path / "runs" / "mlartifacts").as_uri()
    tracker = Tracker(uri, "local")
    parent = tracker.parent_run("p5", {"a": 1})
    tracker.log_json(parent, {"x": 1}, "metrics/final.json")
    assert (tmp_path / "runs" / "mlflow.db").is_file()
    assert list((tmp_path / "runs" / "mlartifacts").rglob("final.json"))
    with pytest.raises(ValueError, match="s3://b/p"):
        default_tracking_uri("s3://b/p")
