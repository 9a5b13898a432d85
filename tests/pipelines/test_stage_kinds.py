"""Stage kinds (the paper's Table 2 baselines, the dense control), `init`, truncation matched
to a budget, and the optimiser options: config checks, the networks they build, and the
multiply-adds a truncation removes, counted by hand."""
from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from pag_model.flops import conv_macs_per_pixel, count_macs
from pipelines.checkpoint import build_model, truncate
from pipelines.config import ConfigError, from_dict, load_config
from pipelines.train.curriculum import point_kind, truncation_for_ratio
from pipelines.train.loop import make_optimizer
from tests.support.staged_data import ROOT

MODEL = {"backbone": "resnet_demo", "tasks": ["semantic"], "num_classes": 5, "multipool_variant": "pag",
         "dilations": [0, 1, 2], "pretrained": None, "head_channels": 8, "head_upsample": "bilinear"}
GATED = ["res3", "res4", "res5"]


def _config(*stages: dict) -> dict:
    return {"pipeline_id": "k", "stages": [{"name": "base", "iterations": 2, "kind": "dense"}, *stages]}


@pytest.mark.parametrize("stage, message", [
    ({"name": "c", "iterations": 1, "kind": "dense", "init": "base", "gated": ["res5"]}, "dense stage has no gates"),
    ({"name": "l", "iterations": 1, "kind": "layer_skip", "gated": GATED}, "needs rho"),
    ({"name": "s", "iterations": 1, "kind": "static_mask", "rho": 0.5}, "needs gated blocks"),
    ({"name": "t", "iterations": 1, "kind": "truncated", "gated": GATED}, "exactly one of truncate"),
    ({"name": "t", "iterations": 1, "kind": "truncated", "gated": GATED, "truncate": 2, "match": "base"}, "exactly one"),
    ({"name": "t", "iterations": 1, "kind": "truncated", "gated": GATED, "truncate": 0}, "truncate=0"),
    ({"name": "t", "iterations": 1, "kind": "truncated", "gated": GATED, "truncate": 1, "rho": 0.5}, "remove rho"),
    ({"name": "p", "iterations": 1, "gated": GATED, "rho": 0.5, "truncate": 2}, "kind=truncated only"),
    ({"name": "p", "iterations": 1, "gated": GATED, "rho": 0.5, "init": "later"}, "init='later': not an earlier stage"),
    ({"name": "t", "iterations": 1, "kind": "truncated", "gated": GATED, "match": "nope"}, "match='nope'"),
    ({"name": "p", "iterations": 1, "kind": "skip"}, "kind"),
    ({"name": "c", "iterations": 1, "kind": "dense", "init": "base", "calibrate": True}, "calibrate=true"),
    ({"name": "p", "iterations": 1, "gated": GATED, "rho": 0.5, "gate_init": 1.0}, "gate_init=1.0"),
])
def test_bad_stage_kinds_are_named(stage, message):
    with pytest.raises(ConfigError, match=message) as info:
        from_dict(_config(stage))
    assert "stages." in str(info.value)


def test_optimizer_and_gate_lr_are_checked():
    with pytest.raises(ConfigError, match="optimizer"):
        from_dict({**_config(), "train": {"optimizer": "lbfgs"}})
    with pytest.raises(ConfigError, match="train.gate_lr_mult"):
        from_dict({**_config(), "train": {"gate_lr_mult": 0}})


def test_a_baseline_may_start_from_any_earlier_stage_and_drop_its_gates():
    cfg = from_dict(_config(
        {"name": "pag", "iterations": 1, "gated": GATED, "rho": 0.5},
        {"name": "control", "iterations": 1, "kind": "dense", "init": "base"},
        {"name": "skip", "iterations": 1, "kind": "layer_skip", "init": "base", "gated": ["res5"], "rho": 0.5},
    ))
    kinds = {s.name: point_kind(s) for s in cfg.stages}
    assert kinds == {"base": None, "pag": ("pag", "pag"), "control": ("control", "dense"), "skip": ("baseline", "layer_skip")}


def test_stage_kinds_build_their_gates():
    nets = {kind: build_model(MODEL, {"kind": kind, "gated": GATED, "multipool": None})
            for kind in ("pag", "layer_skip", "static_mask", "dense")}
    assert len(nets["dense"].gated_blocks()) == 0
    assert {b.gate.granularity for _, b in nets["pag"].gated_blocks()} == {"pixel"}
    assert {b.gate.granularity for _, b in nets["layer_skip"].gated_blocks()} == {"image"}
    assert {b.gate.granularity for _, b in nets["static_mask"].gated_blocks()} == {"static"}


def test_truncation_removes_the_top_blocks_3x3_convs_exactly():
    image = torch.zeros(1, 3, 48, 64)
    dense = build_model(MODEL, {"kind": "dense", "multipool": None}).eval()
    net = build_model(MODEL, {"kind": "truncated", "gated": GATED, "truncate": 3, "multipool": None}).eval()
    modes = [b.gate.mode for _, b in net.gated_blocks()]
    assert modes == ["open"] * 6 + ["closed"] * 3
    assert not any(p.requires_grad for n, p in net.named_parameters() if ".gate." in n)
    conv2 = conv_macs_per_pixel(net.gated_blocks()[-1][1].conv2) * 6 * 8  # 9 * 64 * 64 per pixel, 6 x 8 pixels
    assert conv2 == 9 * 64 * 64 * 48
    macs, dense_macs = float(count_macs(net, image).macs[0]), float(count_macs(dense, image).macs[0])
    assert macs == pytest.approx(dense_macs - 3 * conv2)
    with pytest.raises(ValueError, match="truncate=10"):
        truncate(net, 10)


def test_truncation_matches_a_budget_with_the_closest_number_of_blocks():
    stage = {"kind": "truncated", "gated": GATED, "match": "pag", "multipool": None, "truncate": None}
    image = torch.zeros(1, 3, 48, 64)
    dense = float(count_macs(build_model(MODEL, {"kind": "dense"}).eval(), image).macs[0])
    conv2 = 9 * 64 * 64 * 48
    for k in (1, 4, 9):
        target = (dense - k * conv2) / dense
        assert truncation_for_ratio(MODEL, stage, target + 0.2 * conv2 / dense, (48, 64)) == k


def test_optimizer_puts_the_gates_in_their_own_group_at_the_multiplied_rate():
    net = build_model(MODEL, {"kind": "pag", "gated": ["res5"], "multipool": None})
    train = {"optimizer": "adam", "gate_lr_mult": 10.0, "momentum": 0.9, "weight_decay": 0.0}
    opt = make_optimizer(net, 1e-3, train)
    assert isinstance(opt, torch.optim.Adam)
    rest, gates = opt.param_groups
    gate_ids = {id(p) for n, p in net.named_parameters() if ".gate." in n}
    assert {id(p) for p in gates["params"]} == gate_ids and len(gate_ids) == 8  # 4 gates x (weight, bias)
    assert gates["lr"] == pytest.approx(1e-2) and rest["lr"] == pytest.approx(1e-3)
    assert len(rest["params"]) + len(gates["params"]) == len(list(net.parameters()))
    sgd = make_optimizer(net, 0.1, {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.0})
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[1]["lr"] == pytest.approx(0.1)


def test_shipped_table2_config_builds_every_stage_at_paper_scale():
    cfg = load_config(ROOT / "configs" / "nyuv2_seg_table2.yaml")
    paper = load_config(ROOT / "configs" / "nyuv2_seg.yaml")
    assert (cfg.model, cfg.data, cfg.train, cfg.scaling) == (paper.model, paper.data, paper.train, paper.scaling)
    assert cfg.model.backbone == "resnet50" and cfg.train.optimizer == "sgd"
    kinds = {s.kind for s in cfg.stages}
    assert kinds == {"pag", "dense", "truncated", "layer_skip", "static_mask"}
    starts = {s.init for s in cfg.stages[2:]}
    assert starts == {"multipool"}  # one start, one length: the methods differ, not the training
    assert len({s.iterations for s in cfg.stages[2:]}) == 1
    model = {**cfg.to_dict()["model"], "pretrained": None}
    image = torch.zeros(1, 3, 64, 64)
    one_of_each = {s.kind: s for s in cfg.stages if s.kind != "pag" or s.gated}.values()
    for stage in one_of_each:
        s = asdict(stage)
        if stage.kind == "truncated":
            s["truncate"] = 2
        net = build_model(model, s).eval()
        out = net(image)["semantic"]
        assert out.shape == (1, 40, 64, 64)
        if stage.kind not in ("dense",) and stage.gated:
            assert len(net.gated_blocks()) == 10  # ResNet-50 Res3-Res5: 3 + 5 + 2 identity-shortcut blocks


def test_the_comparison_repeats_over_seeds_from_one_checkpoint():
    from pipelines.config.repeat import repeat_over_seeds, unseeded

    cfg = from_dict(_config(
        {"name": "pag", "iterations": 1, "init": "base", "gated": GATED, "rho": 0.5},
        {"name": "trunc", "iterations": 1, "kind": "truncated", "init": "base", "gated": GATED, "match": "pag"},
    ))
    out = repeat_over_seeds(cfg, [0, 3])
    rows = [(s.name, s.init, s.match, s.seed) for s in out.stages]
    assert rows == [
        ("base", None, None, None),
        ("pag-s0", "base", None, 0), ("trunc-s0", "base", "pag-s0", 0),
        ("pag-s3", "base", None, 3), ("trunc-s3", "base", "pag-s3", 3),
    ]
    assert [unseeded(s) for s in out.stages] == [("base", None), ("pag", 0), ("trunc", 0), ("pag", 3), ("trunc", 3)]
    with pytest.raises(ConfigError, match="no stage has `init`"):
        repeat_over_seeds(from_dict(_config()), [0])
