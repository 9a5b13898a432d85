"""Multiply-add counts against the published ResNet-50 figure and hand-computed layer costs."""
import pytest
import timm
import torch

from pag_model import PAGNet, count_macs, ponder_maps
from pipelines.pictures import ponder_figure


def test_dense_resnet50_at_224_matches_published_4_1_gmacs():
    model = timm.create_model("resnet50").eval()
    report = count_macs(model, torch.randn(1, 3, 224, 224))
    assert report.macs.item() == pytest.approx(4.1e9, rel=0.02)
    assert torch.equal(report.macs, report.dense_macs)


def fixed_masks(net, density, h, w, seed=0):
    """Masks with exactly round(density * H * W) active pixels per gated block."""
    g = torch.Generator().manual_seed(seed)
    for _, block in net.gated_blocks():
        n = h * w
        mask = torch.zeros(n)
        mask[torch.randperm(n, generator=g)[: round(density * n)]] = 1
        block.gate.set_mode("fixed", mask.view(h, w))


@pytest.mark.parametrize("density", [0.0, 0.25, 0.5, 1.0])
def test_gated_3x3_cost_scales_exactly_with_density(density):
    net = PAGNet("resnet_tiny", num_classes=3, multipool=None, gated=("res3", "res4", "res5")).eval()
    x = torch.randn(2, 3, 64, 64)
    fixed_masks(net, density, 8, 8)
    report = count_macs(net, x)
    # By hand: each gated 3x3 conv at 8x8 costs Cin * Cout * 9 * 64 when every pixel computes.
    # The tiny ResNet gates layer2.1, layer3.1 and layer4.1, with 3x3 convs of width 32, 64 and 128.
    full = (32 * 32 + 64 * 64 + 128 * 128) * 9 * 64
    net.set_gate_mode("closed")
    closed = count_macs(net, x).macs
    torch.testing.assert_close(report.macs - closed, torch.full((2,), density * full, dtype=torch.float32), rtol=1e-6, atol=1)
    torch.testing.assert_close(report.dense_macs - closed, torch.full((2,), float(full)), rtol=1e-6, atol=1)
    assert all(torch.allclose(d, torch.tensor(density)) for d in report.densities.values())


def test_multipool_counts_only_the_selected_branch():
    net = PAGNet("resnet_tiny", num_classes=3, multipool="res5", gated=()).eval()
    x = torch.randn(1, 3, 32, 32)
    mp = net.multipools()[0]
    mp.force_branch(0)  # copy: no branch convolution
    copy = count_macs(net, x).macs.item()
    mp.force_branch(3)  # dilation 4: one 3x3 conv 512 -> 512 on the 4x4 map
    assert count_macs(net, x).macs.item() - copy == pytest.approx(512 * 512 * 9 * 16)


def test_ponder_map_sums_masks_per_macro_block_and_png(tmp_path):
    net = PAGNet("resnet_tiny", num_classes=3, multipool=None, gated=("res4", "res5")).eval()
    left = torch.zeros(4, 4)
    left[:, :2] = 1
    net.set_gate_mode("fixed", blocks=["res4"], fixed_mask=left)
    net.set_gate_mode("open", blocks=["res5"])
    net(torch.randn(1, 3, 32, 32))
    maps = ponder_maps(net, (32, 32))
    assert set(maps) == {"res4", "res5", "overall"}
    # One gated block each in res4 and res5: left half computes twice, right half once.
    assert torch.equal(maps["overall"][0, :, :16], torch.full((32, 16), 2.0))
    assert torch.equal(maps["overall"][0, :, 16:], torch.full((32, 16), 1.0))
    fig = ponder_figure(torch.zeros(3, 32, 32), maps["overall"][0], 2, tmp_path / "ponder.png")
    assert (tmp_path / "ponder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drawn = fig.axes[1].images[0]
    assert drawn.cmap(drawn.norm(2.0)) != drawn.cmap(drawn.norm(1.0))
