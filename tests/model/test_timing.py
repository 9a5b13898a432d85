"""measure_time_ratio: the two models it times, its timing loop, and that it leaves the network alone.

References: the dense model must compute what the network computes with its gates forced open
(the blocks' own dense path, Eq. 2 with G = 1); the perforated model what the network computes
in its dense-masked eval path (Eq. 2 with the gates' masks); the timing loop is checked with a
fake clock. The time ratios themselves are a loose behavioural check (slow mark).
"""
from __future__ import annotations

import copy
import time

import pytest
import torch
from timm.models.resnet import Bottleneck
from torch import nn

from pag_model import GumbelGate, PAGBottleneck, PAGNet
from pag_model.ops import BACKEND_ENV
from pag_model.sparse import to_perforated
from pag_model.timing import MEASURE, TimeRatio, dense_copy, interleaved_times, measure_time_ratio, perforated_copy

from tests.support.backends import BACKENDS, _reference_unless_parametrised, backend  # noqa: F401 (fixtures)


def demo_net() -> PAGNet:
    """The demo's network with non-trivial BatchNorm statistics and gate logits."""
    net = PAGNet(backbone="resnet_demo", tasks=("semantic",), num_classes=40, multipool=None,
                 gated=("res3", "res4", "res5"), head_channels=32, head_upsample="bilinear")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            if isinstance(m, GumbelGate):  # learned gates near density 0.5, not all open
                m.conv.weight.normal_(0, 0.3, generator=gen)
                m.conv.bias.zero_()
    return net.eval()


def set_gates(net: PAGNet, gates: str, batch: int, height: int, width: int) -> None:
    if gates == "fixed":
        gen = torch.Generator().manual_seed(2)
        for _, gate in net.gates():
            h, w = height // net.output_stride, width // net.output_stride
            gate.set_mode("fixed", (torch.rand(batch, h, w, generator=gen) < 0.5).float())
    else:
        net.set_gate_mode(gates)


def test_time_ratio_is_perforated_over_dense() -> None:
    assert TimeRatio(perforated_s=0.03, dense_s=0.04, repeats=3, device="cpu").ratio == pytest.approx(0.75)


def test_interleaved_times_alternates_and_times_each_call() -> None:
    calls: list[str] = []
    now = [0.0]
    cost = {"a": 1.0, "b": 10.0}

    def run(name: str):
        def fn() -> None:
            calls.append(name)
            now[0] += cost[name]

        return fn

    times = interleaved_times({"a": run("a"), "b": run("b")}, repeats=3, warmup=2, clock=lambda: now[0])
    assert calls == ["a", "b"] * 5  # A B A B: 2 warm-up rounds, then 3 timed
    assert times == {"a": [1.0, 1.0, 1.0], "b": [10.0, 10.0, 10.0]}
    with pytest.raises(ValueError, match="repeats"):
        interleaved_times({"a": run("a")}, repeats=0)


@pytest.mark.parametrize("gates", ["learned", "closed", "fixed"])
def test_dense_copy_has_no_gates_and_equals_the_gates_open_network(gates: str) -> None:
    net = demo_net()
    set_gates(net, gates, 2, 48, 64)
    images = torch.randn(2, 3, 48, 64)
    opened = copy.deepcopy(net)
    opened.set_gate_mode("open")
    with torch.no_grad():
        expected = opened(images)["semantic"]
        dense = dense_copy(net)
        got = dense(images.contiguous(memory_format=torch.channels_last))["semantic"]
    kinds = [type(m) for m in dense.modules()]
    assert GumbelGate not in kinds and PAGBottleneck not in kinds
    assert kinds.count(Bottleneck) == 11  # resnet_demo: 1 + 2 + 4 + 4 blocks, 9 of them were gated
    assert not any(isinstance(m, nn.BatchNorm2d) for m in dense.modules())  # folded, as deployed
    assert not dense.training
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("gates", ["learned", "closed", "fixed", "open"])
@pytest.mark.parametrize("thresholds", [MEASURE, None])
def test_perforated_copy_equals_the_masked_network(backend: str, gates: str, thresholds) -> None:
    net = demo_net()
    set_gates(net, gates, 2, 48, 64)
    images = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        expected = net(images)["semantic"]  # the dense-masked reference (Eq. 2)
        perforated = perforated_copy(net, images, thresholds)
        got = perforated(images.contiguous(memory_format=torch.channels_last))["semantic"]
    blocks = [m for m in perforated.modules() if isinstance(m, PAGBottleneck)]
    assert len(blocks) == 9 and all(b.sparse_conv2 is not None for b in blocks)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in perforated.modules())
    assert perforated.backbone.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_perforated_copy_refuses_an_unknown_threshold_word() -> None:
    with pytest.raises(ValueError, match="thresholds"):
        perforated_copy(demo_net(), torch.randn(1, 3, 48, 64), "calibrate")


@pytest.mark.parametrize("perforated", [False, True])
def test_measure_time_ratio_leaves_the_network_unchanged(perforated: bool) -> None:
    net = demo_net()
    images = torch.randn(2, 3, 48, 64)
    set_gates(net, "fixed", 2, 48, 64)
    net.set_gate_mode("closed", blocks=["res5"])
    if perforated:
        to_perforated(net)
        with torch.no_grad():
            net(images)  # the perforated modules have run (packed weights, where the kernel runs)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    strides = {k: v.stride() for k, v in net.state_dict().items()}
    modes = [(gate.mode, gate.fixed_mask) for _, gate in net.gates()]
    sparse = [b.sparse_conv2 for _, b in net.gated_blocks()]
    kinds = [type(m) for m in net.modules()]
    with torch.no_grad():
        before = net(images)["semantic"]

    result = measure_time_ratio(net, images, repeats=1, warmup=0)

    assert result.repeats == 1 and result.device == "cpu" and result.ratio > 0
    assert [type(m) for m in net.modules()] == kinds
    assert [(gate.mode, gate.fixed_mask) for _, gate in net.gates()] == modes
    assert all(a is b for a, b in zip((b.sparse_conv2 for _, b in net.gated_blocks()), sparse))
    assert not net.training
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
        assert value.stride() == strides[key], key
    with torch.no_grad():
        torch.testing.assert_close(net(images)["semantic"], before, rtol=0, atol=0)


@pytest.mark.slow
def test_time_ratio_closed_below_one_and_open_near_one(monkeypatch) -> None:
    """Behaviour on the demo model (cpp kernel, 96x128). One thread, timed by its CPU time: on
    the shared 2-core machine (load average up to 20) wall-clock ratios of this millisecond
    model swing by 2x, while the thread's own work does not depend on the other processes."""
    monkeypatch.delenv(BACKEND_ENV)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = demo_net()
        images = torch.randn(1, 3, 96, 128)
        net.set_gate_mode("closed", blocks=["res4", "res5"])  # 8 of the 9 gated 3x3 convs skipped
        closed = measure_time_ratio(net, images, repeats=5, clock=time.thread_time)
        net.set_gate_mode("open")
        opened = measure_time_ratio(net, images, repeats=5, clock=time.thread_time)
    finally:
        torch.set_num_threads(threads)
    assert closed.ratio < 1.0, closed
    assert abs(opened.ratio - 1.0) < 0.15, opened
