"""Re-running a pipeline id: the recorded config must match (else a one-line error naming the
differing keys, before Ray starts); `--restart` starts afresh; entry-point errors are redacted.

No Ray here: every case ends before `init_ray` (asserted), with real shards and a real
SQLite MLflow store.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from mlflow.tracking import MlflowClient

from pipelines.config import ConfigError
from pipelines.staged import main as staged_main
from pipelines.tracking.tracker import TAG_PIPELINE, Tracker
from pipelines.train.recorded import (
    ConfigMismatch,
    archive,
    check_recorded,
    differences,
    record_uri,
    write_recorded,
)
from tests.support.mlflow_server import free_port
from tests.support.staged_data import DEMO, make_shards, tiny_config, tiny_overrides

STAGES = "[{name: base, iterations: 2, lr: 0.01}]"


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("data"), train=2, test=1, size=(32, 32))


@pytest.fixture(autouse=True)
def no_ray():
    import ray

    assert not ray.is_initialized()
    yield
    assert not ray.is_initialized(), "the entry point started Ray before failing"


def _recorded():
    return {
        "pipeline_id": "p",
        "train": {"seed": 0, "log_every": 10, "max_failures": 1},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1.0},
        "stages": [{"name": "base", "iterations": 2, "lr": 0.01}],
    }


def test_differences_name_each_changed_key_with_both_values():
    new = _recorded()
    new["train"]["seed"] = 3
    new["stages"][0]["lr"] = 0.02
    new["scaling"]["num_workers"] = 2
    assert differences(_recorded(), new) == [
        "scaling.num_workers: recorded 1, now 2",
        "stages.base.lr: recorded 0.01, now 0.02",
        "train.seed: recorded 0, now 3",
    ]


def test_appended_stages_and_run_only_keys_are_allowed():
    new = _recorded()
    new["stages"].append({"name": "rho-0_5", "iterations": 2, "lr": 0.01, "rho": 0.5})
    new["train"]["log_every"] = 1
    new["train"]["max_failures"] = 5
    new["scaling"]["cpus_per_worker"] = 2.0
    assert differences(_recorded(), new) == []


def test_removed_or_reordered_stages_are_one_difference():
    new = _recorded()
    new["stages"] = [{"name": "warmup", "iterations": 1, "lr": 0.01}] + new["stages"]
    assert differences(_recorded(), new) == [
        "stages: recorded ['base'], now ['warmup', 'base'] (only appending stages is allowed)"
    ]


def test_rerun_with_changed_config_stops_before_ray_naming_the_keys(shard_dir, tmp_path, capsys):
    first = tiny_config(shard_dir, tmp_path, STAGES)
    write_recorded(first)  # what the first run recorded
    argv = ["--config", str(DEMO)]
    for item in tiny_overrides(shard_dir, tmp_path, STAGES):
        argv += ["--set", item]
    code = staged_main(argv + ["--set", "stages.base.lr=0.02", "--set", "train.seed=7"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "stages.base.lr: recorded 0.01, now 0.02" in err[0]
    assert "train.seed: recorded 0, now 7" in err[0]
    assert "--restart" in err[0] and "pipeline_id=<new id>" in err[0]
    # The record is untouched: it still holds the first run's config.
    assert json.loads(open(record_uri(first)).read())["stages"][0]["lr"] == 0.01


def test_restart_archives_records_and_mlflow_runs(tmp_path):
    config = tiny_config(tmp_path / "nodata", tmp_path, STAGES, extra=["pipeline_id=rs"])
    write_recorded(config)
    (tmp_path / "rs" / "stages").mkdir()
    (tmp_path / "rs" / "stages" / "base.done.json").write_text("{}")
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp")
    parent = tracker.parent_run("rs", config.to_dict())
    child = tracker.child_run(parent, "rs", "base", {})

    changed = tiny_config(tmp_path / "nodata", tmp_path, STAGES, extra=["pipeline_id=rs", "train.seed=9"])
    with pytest.raises(ConfigMismatch, match="train.seed: recorded 0, now 9"):
        check_recorded(changed)
    suffix, moved = archive(changed, now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert suffix == "restarted-20260102T030405Z" and moved == str(tmp_path / "rs.restarted-20260102T030405Z")
    assert (tmp_path / "rs.restarted-20260102T030405Z" / "stages" / "base.done.json").is_file()
    assert not (tmp_path / "rs").exists()
    assert tracker.archive_pipeline("rs", suffix, "no-such-model") == 2
    check_recorded(changed)  # nothing recorded any more
    new_parent = tracker.parent_run("rs", changed.to_dict())
    assert new_parent != parent  # new runs, the old ones kept under the archived id
    client = MlflowClient(tracker.tracking_uri)
    for run_id in (parent, child):
        assert client.get_run(run_id).data.tags[TAG_PIPELINE] == "rs.restarted-20260102T030405Z"


def test_restart_refuses_remote_storage():
    from pipelines.config import load_config

    config = load_config(DEMO, ["storage_path=s3://bucket/runs", "tracking.tracking_uri=http://mlflow:5000"])
    with pytest.raises(ConfigError, match="--set pipeline_id=<new id>"):
        archive(config)


def test_unreachable_tracking_server_error_is_one_redacted_line_before_ray(shard_dir, tmp_path):
    """As a user runs it (a subprocess: everything MLflow, Ray or logging print is seen)."""
    import os
    import subprocess
    import sys

    from tests.support.staged_data import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
           "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}
    uri = f"http://alice:pl4nted-pw-123@127.0.0.1:{free_port()}"  # nothing listens there
    cmd = [sys.executable, "-m", "pipelines.staged", "--config", str(DEMO), "--tracking-uri", uri]
    for item in tiny_overrides(shard_dir, tmp_path, STAGES):
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "pl4nted-pw-123" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "ray" not in proc.stdout.lower()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: tracking.tracking_uri='http://alice:***@127.0.0.1:")
    assert "cannot reach MLflow" in lines[0]
