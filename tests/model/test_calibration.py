"""Density calibration: after it, each gated layer's evaluated density on the calibration
images is rho (counted from the masks by `count_macs`, not by the calibration's own report),
pixel order within a layer is kept, and gates not in "learned" mode are left alone."""
from __future__ import annotations

import pytest
import torch

from pag_model import PAGNet
from pag_model.calibration import calibrate_densities
from pag_model.flops import count_macs


def _net(granularity: str = "pixel") -> PAGNet:
    torch.manual_seed(0)
    net = PAGNet(backbone="resnet_demo", gated=("res4", "res5"), multipool=None, head_channels=8,
                 head_upsample="bilinear", gate_granularity=granularity).eval()
    with torch.no_grad():
        for _, block in net.gated_blocks():
            if granularity == "static":
                block.gate.static_logits.normal_()
            else:
                block.gate.conv.weight.normal_(std=0.5)
    return net


@pytest.mark.parametrize("rho", [0.3, 0.5, 0.8])
def test_each_layer_evaluates_at_rho_on_the_calibration_images(rho):
    net = _net()
    images = [torch.randn(2, 3, 64, 64) for _ in range(3)]
    report = calibrate_densities(net, images, rho)
    assert len(report) == 8
    counted = {name: [] for name in count_macs(net, images[0]).densities}
    for batch in images:
        for name, d in count_macs(net, batch).densities.items():
            counted[name] += d.tolist()
    pixels = 6 * 8 * 8  # decisions per layer: 6 images x 8 x 8
    for name, values in counted.items():
        assert sum(values) / len(values) == pytest.approx(rho, abs=1.5 / pixels), name
    assert all(abs(c.after - rho) <= 1.5 / pixels for c in report)


def test_calibration_keeps_the_order_of_pixels_within_a_layer():
    net = _net()
    images = [torch.randn(1, 3, 64, 64)]
    first = net.gated_blocks()[0][1].gate
    x = {}
    first.register_forward_pre_hook(lambda m, inp: x.setdefault("in", inp[0]))
    net(images[0])
    with torch.no_grad():
        before = first.logits(x["in"])
        margin_before = (before[:, 1] - before[:, 0]).flatten()
    calibrate_densities(net, images, 0.4)
    with torch.no_grad():
        after = first.logits(x["in"])
        margin_after = (after[:, 1] - after[:, 0]).flatten()
    assert torch.equal(margin_before.argsort(), margin_after.argsort())
    assert float((margin_after > 0).float().mean()) == pytest.approx(0.4, abs=1 / 64)


@pytest.mark.parametrize("granularity", ["image", "static"])
def test_baseline_gates_calibrate_too(granularity):
    net = _net(granularity)
    images = [torch.randn(4, 3, 32, 32) for _ in range(5)]
    report = calibrate_densities(net, images, 0.6)
    decisions = 20 if granularity == "image" else 4 * 4
    assert all(abs(c.after - 0.6) <= 1.0 / decisions + 1e-6 for c in report)


def test_gates_in_other_modes_are_not_touched():
    net = _net()
    net.set_gate_mode("closed", ["res5"])
    biases = {n: b.gate.conv.bias.clone() for n, b in net.gated_blocks()}
    report = calibrate_densities(net, [torch.randn(1, 3, 32, 32)], 0.5)
    assert [c.layer for c in report] == [n for n, _ in net.gated_blocks() if ".layer3." in f".{n}"]
    for n, b in net.gated_blocks():
        if "layer4" in n:
            assert torch.equal(b.gate.conv.bias, biases[n])
