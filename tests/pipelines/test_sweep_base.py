"""Where trials start: a registered model (`models:/NAME@ALIAS`) turned into a checkpoint the
training loop loads, and a curriculum stage that has not finished (a clear error)."""
from __future__ import annotations

import pytest
import torch
import yaml

from pipelines.config import ConfigError, PipelineConfig, StageConfig, from_dict, load_config
from pipelines.train.stages import StageRecord, write_record
from pipelines.sweeps.base import resolve_base
from pipelines.config import parse_sweep
from pipelines.checkpoint import build_model, load_state
from tests.support.sweep import MODEL


@pytest.mark.slow
def test_registered_model_becomes_a_base_checkpoint(tmp_path):
    from pipelines.tracking.tracker import Tracker, default_tracking_uri

    uri = default_tracking_uri(str(tmp_path / "mlflow"))
    tracker = Tracker(uri, "base-test")
    stage = {"multipool": "res5", "gated": []}
    net = build_model(MODEL, stage)
    run = tracker.child_run(tracker.parent_run("p", {}), "p", "multipool", {})
    model_uri = tracker.log_model(run, net, MODEL, stage)
    tracker.register("pag-base", model_uri, ["mp"], {})

    stage = {"name": "s", "iterations": 1, "multipool": "res5", "gated": ["res5"], "rho": 0.5}
    pipeline = from_dict({"model": MODEL, "stages": [stage]})
    target = tmp_path / "sweep" / "base"
    got = resolve_base(parse_sweep({"base": "models:/pag-base@mp"}), pipeline, uri, str(target))
    assert got == str(target)
    state = load_state(got)
    # The weights are the registered network's, and a gated trial model accepts them.
    for key, value in net.state_dict().items():
        assert torch.equal(state["model"][key], value), key
    gated = build_model(MODEL, {"multipool": "res5", "gated": ["res5"]})
    new = gated.load_stage_state(state["model"])
    assert new and all(".gate." in k for k in new)
    # A second call reuses the file instead of loading the model again.
    mtime = (target / "state.pt").stat().st_mtime_ns
    assert resolve_base(parse_sweep({"base": "models:/pag-base@mp"}), pipeline, uri, str(target)) == str(target)
    assert (target / "state.pt").stat().st_mtime_ns == mtime
    with pytest.raises(ConfigError, match="sweep.base='models:/pag-base@nope': cannot load it"):
        resolve_base(parse_sweep({"base": "models:/pag-base@nope"}), pipeline, uri, str(tmp_path / "other"))


def test_curriculum_stage_must_have_finished(tmp_path):
    staged = {
        "pipeline_id": "cur",
        "storage_path": str(tmp_path / "runs"),
        "stages": [{"name": "base", "iterations": 5}, {"name": "multipool", "iterations": 5, "multipool": "res5"}],
    }
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(staged))
    pipeline = PipelineConfig(stages=[StageConfig("s", 1, multipool="res5", gated=("res5",), rho=0.5)])
    sweep = parse_sweep({"base": "curriculum:multipool", "curriculum": str(path)})
    with pytest.raises(ConfigError, match="curriculum:multipool: that stage of .* has not finished"):
        resolve_base(sweep, pipeline, "sqlite:///unused.db", str(tmp_path / "b"))
    with pytest.raises(ConfigError, match="has no stage 'gates'"):
        resolve_base(parse_sweep({"base": "curriculum:gates", "curriculum": str(path)}), pipeline, "", "")
    write_record(load_config(path), StageRecord("multipool", 1, "/ck/multipool/checkpoint_00000005", 5))
    assert resolve_base(sweep, pipeline, "", "") == "/ck/multipool/checkpoint_00000005"
