"""Stage chaining, done records, checkpoint state, the poly schedule and early errors (no Ray)."""
from __future__ import annotations

import json

import pytest
import torch

from pipelines.config import from_dict
from pipelines.checkpoint import as_checkpoint, build_model, checkpoint_uri, load_state, save_state
from pipelines.train.stages import (
    StageError,
    StageRecord,
    read_record,
    record_uri,
    run_name,
    write_record,
)
from pipelines.train.loop import poly_scheduler
from tests.support.staged_data import DEMO, TWO_STAGES, make_shards, tiny_overrides

MODEL = {
    "backbone": "resnet_tiny",
    "tasks": ["semantic", "depth"],
    "num_classes": 40,
    "multipool_variant": "pag",
    "dilations": [0, 1, 2, 4, 6, 8, 10],
    "pretrained": None,
    "head_channels": 8,
}


def _config(tmp_path):
    return from_dict({
        "pipeline_id": "p",
        "storage_path": str(tmp_path / "store"),
        "stages": [{"name": "base", "iterations": 3}, {"name": "g", "iterations": 2, "gated": ["res5"], "rho": 0.5}],
    })


def test_run_names_are_deterministic(tmp_path):
    cfg = _config(tmp_path)
    assert [run_name("p", i, s) for i, s in enumerate(cfg.stages)] == ["p-00-base", "p-01-g"]


def test_done_record_round_trip_and_atomic(tmp_path):
    cfg = _config(tmp_path)
    assert read_record(cfg, cfg.stages[0]) is None
    rec = StageRecord("base", 0, "/ckpt/checkpoint_00000003", 3, "run1", {"semantic/miou": 0.5}, "models:/m-1")
    path = write_record(cfg, rec)
    assert path == str(tmp_path / "store" / "p" / "stages" / "base.done.json")
    assert read_record(cfg, cfg.stages[0]) == rec
    assert read_record(cfg, cfg.stages[1]) is None
    assert [p.name for p in (tmp_path / "store" / "p" / "stages").iterdir()] == ["base.done.json"]


def test_unreadable_record_names_the_file(tmp_path):
    cfg = _config(tmp_path)
    uri = record_uri(cfg, cfg.stages[0])
    (tmp_path / "store" / "p" / "stages").mkdir(parents=True)
    open(uri, "w").write("{not json")
    with pytest.raises(StageError, match="base.done.json"):
        read_record(cfg, cfg.stages[0])


def test_local_checkpoint_uri_round_trip(tmp_path):
    ckpt = as_checkpoint(str(tmp_path))
    assert checkpoint_uri(ckpt) == str(tmp_path)


def test_poly_schedule_matches_paper_formula():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    sched = poly_scheduler(opt, 100, 0.9)
    lrs = []
    for _ in range(150):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for it in (0, 10, 50, 99, 100, 149):
        assert lrs[it] == pytest.approx(2e-4 * max(0.0, 1 - it / 100) ** 0.9, abs=1e-12)


def test_stage_chaining_keeps_shared_weights_and_adds_new_modules(tmp_path):
    base = build_model(MODEL, {"multipool": None, "gated": []})
    save_state(tmp_path, {"model": base.state_dict(), "iteration": 3})
    gated = build_model(MODEL, {"multipool": "res5", "gated": ["res4", "res5"]})
    new = gated.load_stage_state(load_state(tmp_path)["model"])
    assert new and all(".gate." in k or k.startswith(("after.", "res6.")) for k in new)
    for key, value in base.state_dict().items():
        torch.testing.assert_close(gated.state_dict()[key], value, msg=key)
    assert len(gated.gates()) == 2  # resnet_tiny: one stride-1 bottleneck in each of res4, res5


def test_load_state_names_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="state.pt"):
        load_state(tmp_path)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("data"), train=2, test=1, size=(48, 64))


def _main(args):
    from pipelines.staged import main

    return main(["--config", str(DEMO), *[x for a in args for x in ("--set", a)]])


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.uri=/nonexistent/shards", "data.uri='/nonexistent/shards'"),
        ("data.eval_split=val", "no split 'val'"),
        ("stages.1.gated=[res9]", "'res9'"),
        ("model.num_classes=13", "40 classes"),
        ("model.pretrained=/nonexistent/w.pth", "model.pretrained='/nonexistent/w.pth': no such weights file"),
        ("stages.1.gated=[res2, res4, res5]", None),  # res2 is gateable: accepted
    ],
)
def test_bad_input_fails_before_any_worker(shards, tmp_path, capsys, override, message):
    import ray

    from pipelines.config import load_config
    from pipelines.train.curriculum import preflight

    overrides = tiny_overrides(shards, tmp_path, TWO_STAGES) + [override]
    if message is None:
        preflight(load_config(DEMO, overrides))
        return
    assert _main(overrides) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not ray.is_initialized()


def test_empty_split_fails_before_any_worker(shards, tmp_path, capsys):
    import shutil

    import ray

    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["splits"]["test"].update(count=0, shards=[])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert _main(tiny_overrides(copy, tmp_path, TWO_STAGES)) == 2
    assert "split 'test' has no samples" in capsys.readouterr().err
    assert not ray.is_initialized()



def test_resources_the_cluster_lacks_fail_naming_the_scaling_keys(shards, tmp_path):
    """A fixed (local) cluster without GPUs or with too few CPUs: an error, not a wait forever."""
    from pipelines.config import ConfigError, load_config
    from pipelines.train.curriculum import check_resources

    base = tiny_overrides(shards, tmp_path, TWO_STAGES)
    gpu = load_config(DEMO, base + ["scaling.use_gpu=true"])
    with pytest.raises(ConfigError, match="scaling.use_gpu=true: .* need 1 GPU.*no GPU was found"):
        check_resources(gpu, {"CPU": 2.0}, autoscaling=False)
    check_resources(gpu, {"CPU": 2.0, "GPU": 1.0}, autoscaling=False)
    check_resources(gpu, {"CPU": 2.0}, autoscaling=True)  # a cluster that can add GPU nodes
    many = load_config(DEMO, base + ["scaling.num_workers=3", "scaling.cpus_per_worker=1"])
    with pytest.raises(ConfigError, match="need 3 CPUs; the Ray cluster has 2"):
        check_resources(many, {"CPU": 2.0}, autoscaling=False)


@pytest.mark.slow
def test_use_gpu_without_a_gpu_fails_within_seconds(shards, tmp_path, capsys):
    import time

    import ray

    start = time.monotonic()
    try:
        assert _main(tiny_overrides(shards, tmp_path, TWO_STAGES) + ["scaling.use_gpu=true"]) == 2
    finally:
        ray.shutdown()
    assert "no GPU was found" in capsys.readouterr().err
    assert time.monotonic() - start < 60
