"""Gate granularities: the paper's Table 2 baselines as gates of the same blocks.

Each is checked against its definition computed by hand: a per-image gate takes the argmax of
its 1x1 conv on the globally averaged input (adaptive inference graphs), a static gate the
argmax of its own logit grid resized to the layer (PerforatedCNN's input-independent mask),
and the sparsity loss of per-image gates is the KL of the batch's share of computing images.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pag_model import PAGNet
from pag_model.gating import GumbelGate
from pag_model.sparsity import sparsity_loss


def test_image_gate_is_one_decision_per_image_from_the_pooled_input():
    torch.manual_seed(0)
    gate = GumbelGate(4, granularity="image").eval()
    with torch.no_grad():
        gate.conv.weight.normal_()
        gate.conv.bias.zero_()
    x = torch.randn(5, 4, 6, 7)
    mask = gate(x)
    assert mask.shape == (5, 1, 6, 7)
    w, b = gate.conv.weight[:, :, 0, 0], gate.conv.bias
    for i in range(5):
        logits = w @ x[i].mean(dim=(1, 2)) + b  # by hand: (2,) = W mean(x) + b
        expected = float(logits[1] > logits[0])
        assert torch.all(mask[i] == expected)
    assert {float(v) for v in mask.detach().unique()} <= {0.0, 1.0}


def test_static_gate_ignores_the_input_and_resizes_its_grid():
    gate = GumbelGate(4, granularity="static", static_size=2).eval()
    with torch.no_grad():
        gate.static_logits.copy_(torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[1.0, -1.0], [-1.0, 1.0]]]))
    a, b = gate(torch.randn(3, 4, 4, 6)), gate(torch.zeros(3, 4, 4, 6))
    assert torch.equal(a, b)
    # Nearest resize of the 2x2 grid [[1, 0], [0, 1]] to 4x6: quadrants.
    expected = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat_interleave(2, 0).repeat_interleave(3, 1)
    assert torch.equal(a[0, 0], expected) and torch.equal(a[2, 0], expected)


def test_unknown_granularity_is_named():
    with pytest.raises(ValueError, match="granularity 'row'"):
        GumbelGate(4, granularity="row")


def test_per_image_gates_are_penalised_on_the_batch_share_of_computing_images():
    torch.manual_seed(0)
    net = PAGNet(backbone="resnet_demo", gated=("res5",), multipool=None, head_channels=8,
                 head_upsample="bilinear", gate_granularity="image").train()
    net(torch.randn(4, 3, 32, 32))
    rho, lam = 0.5, 0.2
    loss, densities = sparsity_loss(net, rho, lam)
    expected = 0.0
    for g in densities.values():
        share = (float(g.mean()) * 4 + 0.5) / 5  # the batch's share, smoothed over 4 decisions
        expected += rho * math.log(rho / share) + (1 - rho) * math.log((1 - rho) / (1 - share))
        assert set(g.tolist()) <= {0.0, 1.0}
    assert len(densities) == 4
    assert float(loss.detach()) == pytest.approx(lam * expected, rel=1e-5)


@pytest.mark.parametrize("granularity", ["image", "static"])
def test_baseline_gates_learn_through_the_straight_through_estimator(granularity):
    torch.manual_seed(0)
    net = PAGNet(backbone="resnet_demo", gated=("res4", "res5"), multipool=None, head_channels=8,
                 head_upsample="bilinear", gate_granularity=granularity).train()
    out = net(torch.randn(2, 3, 32, 32))["semantic"]
    loss, _ = sparsity_loss(net, 0.3, 1.0)
    (out.mean() + loss).backward()
    grads = [p.grad for n, p in net.named_parameters() if ".gate." in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


def test_bilinear_head_predicts_at_the_stride_and_upsamples():
    net = PAGNet(backbone="resnet_demo", multipool=None, head_channels=8, head_upsample="bilinear", num_classes=5).eval()
    head = net.heads["semantic"]
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        out = net(x)["semantic"]
        low = head.predict(head.conv2(head.conv1(head.reduce(net.features(x)["top"]))))
    assert low.shape == (1, 5, 6, 8) and out.shape == (1, 5, 48, 64)
    torch.testing.assert_close(out, F.interpolate(low, size=(48, 64), mode="bilinear", align_corners=False))


def test_demo_backbone_gates_nine_blocks_that_dominate_its_cost():
    from pag_model.flops import conv_macs_per_pixel, count_macs

    net = PAGNet(backbone="resnet_demo", gated=("res3", "res4", "res5"), multipool=None, head_channels=16,
                 head_upsample="bilinear", num_classes=40).eval()
    blocks = net.gated_blocks()
    assert len(blocks) == 9
    report = count_macs(net, torch.zeros(1, 3, 96, 128))
    gated = sum(conv_macs_per_pixel(b.conv2) * 12 * 16 for _, b in blocks)  # 9 x (9 * 64 * 64) at 12 x 16
    assert gated == 9 * 9 * 64 * 64 * 12 * 16
    assert 0.6 < gated / float(report.dense_macs[0]) < 0.7
