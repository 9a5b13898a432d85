"""A torn checkpoint to resume from is named before Ray Train reads it (not a misleading
"failed after N restart(s)"), with the way to recover."""
from __future__ import annotations

import json

import pytest
import torch

from pipelines.train.stages import StageError, check_resume_checkpoint, read_record, record_uri
from tests.support.staged_data import make_shards, tiny_config

STAGES = "[{name: base, iterations: 4, lr: 0.01}]"


def _snapshot(latest: str) -> dict:
    """What Ray Train 2.60 writes as checkpoint_manager_snapshot.json (the fields read here)."""
    result = lambda name, it: {"version": 0, "checkpoint_dir_name": name, "metrics": {"iteration": it}}  # noqa: E731
    return {
        "ray_version": "2.60.0",
        "checkpoint_results": [result("checkpoint_00000002", 2), result(latest, 4)],
        "checkpoint_report_indices": [1, 3],
        "latest_checkpoint_result": result(latest, 4),
        "pending_training_results": [],
        "current_report_index": 4,
    }


@pytest.fixture
def run_dir(tmp_path):
    config = tiny_config(tmp_path / "no-data", tmp_path, STAGES, extra=["pipeline_id=torn"])
    run = tmp_path / "torn" / "torn-00-base"
    for name in ("checkpoint_00000002", "checkpoint_00000004"):
        (run / name).mkdir(parents=True)
        torch.save({"model": {"w": torch.randn(64, 64)}, "iteration": int(name[-1])}, run / name / "state.pt")
    (run / "checkpoint_manager_snapshot.json").write_text(json.dumps(_snapshot("checkpoint_00000004")))
    return config, run


def test_a_whole_checkpoint_passes(run_dir):
    config, run = run_dir
    assert check_resume_checkpoint(config, 0) == str(run / "checkpoint_00000004")


def test_no_run_yet_passes(tmp_path):
    config = tiny_config(tmp_path / "no-data", tmp_path, STAGES, extra=["pipeline_id=fresh"])
    assert check_resume_checkpoint(config, 0) is None


def test_truncated_state_is_named_with_the_recovery(run_dir):
    config, run = run_dir
    state = run / "checkpoint_00000004" / "state.pt"
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])
    with pytest.raises(StageError) as info:
        check_resume_checkpoint(config, 0)
    message = str(info.value)
    assert f"the checkpoint to resume from is torn: {state} is not a whole torch archive" in message
    assert f"delete the directory {run}" in message
    assert "restart(s)" not in message


def test_missing_state_is_named(run_dir):
    config, run = run_dir
    (run / "checkpoint_00000004" / "state.pt").unlink()
    with pytest.raises(StageError, match=f"{run / 'checkpoint_00000004'}, has no state.pt"):
        check_resume_checkpoint(config, 0)


@pytest.mark.slow
def test_pipeline_stops_on_a_torn_checkpoint_with_the_file_named(tmp_path):
    """The real thing: a stage trained by Ray Train, its done record removed (as if it had been
    stopped after its last checkpoint) and that checkpoint's state.pt truncated."""
    import ray

    from pipelines.train.curriculum import run_pipeline

    shards = make_shards(tmp_path / "data", train=4, test=1, size=(32, 32))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        config = tiny_config(shards, tmp_path, STAGES, extra=["pipeline_id=torn"])
        run_pipeline(config, progress=lambda _: None)
        record = read_record(config, config.stages[0])
        state = tmp_path / "torn" / "torn-00-base" / "checkpoint_00000004" / "state.pt"
        assert record.checkpoint == str(state.parent)
        (tmp_path / "torn" / "stages" / "base.done.json").unlink()
        assert not (tmp_path / "torn" / "stages" / "base.done.json").exists() and record_uri(config, config.stages[0])
        data = state.read_bytes()
        state.write_bytes(data[: len(data) - 100])
        with pytest.raises(StageError) as info:
            run_pipeline(config, progress=lambda _: None)
    finally:
        ray.shutdown()
    assert f"{state} is not a whole torch archive" in str(info.value)
    assert "restart(s)" not in str(info.value)
