"""PAG bottleneck (Eq. 2) and convert_to_pag against the original timm blocks, by hand."""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F

from pag_model import PAGBottleneck, build_backbone, convert_to_pag, pag_blocks


def randomise_bn(model):
    """Non-trivial BatchNorm statistics, so equalities are not satisfied by identity layers."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("name", ["resnet26", "resnet_tiny"])
def test_gates_forced_open_reproduce_the_original_network(name):
    if name == "resnet26":
        original = timm.create_model("resnet26", num_classes=10)  # a stock timm model, classifier included
    else:
        original = build_backbone("resnet_tiny")
    randomise_bn(original).eval()
    converted = copy.deepcopy(original)
    wrapped = convert_to_pag(converted, ["res2", "res3", "res4", "res5"])
    assert wrapped and all(isinstance(converted.get_submodule(n), PAGBottleneck) for n in wrapped)
    for _, block in pag_blocks(converted):
        block.gate.set_mode("open")
    converted.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), original(x), rtol=1e-5, atol=1e-5)


def plain_parts(block, i):
    """X = F1(I) and Y = F2(X) from the block's own layers."""
    x = F.relu(block.bn1(block.conv1(i)))
    y = F.relu(block.bn2(block.conv2(x)))
    return x, y


def test_gates_forced_closed_skip_the_3x3_conv_in_every_block():
    net = randomise_bn(build_backbone("resnet_tiny"))
    convert_to_pag(net, ["res3", "res4", "res5"])
    net.eval()
    for name, block in pag_blocks(net):
        i = torch.randn(2, block.conv1.in_channels, 9, 7)
        block.gate.set_mode("closed")
        with torch.no_grad():
            x, _ = plain_parts(block, i)
            expected = F.relu(i + block.bn3(block.conv3(x)))  # conv3 applied to X: F2 skipped
            torch.testing.assert_close(block(i), expected, rtol=1e-5, atol=1e-5, msg=name)


def test_fixed_mask_mixes_open_and_closed_per_pixel():
    net = randomise_bn(build_backbone("resnet_tiny"))
    convert_to_pag(net, ["res4"])
    block = pag_blocks(net)[0][1].eval()
    i = torch.randn(3, block.conv1.in_channels, 8, 10)
    mask = (torch.rand(3, 8, 10) > 0.5).float()
    with torch.no_grad():
        x, y = plain_parts(block, i)
        m = mask[:, None]
        expected = F.relu(i + block.bn3(block.conv3((1 - m) * x + m * y)))  # Eq. 2
        block.gate.set_mode("fixed", mask)
        mixed = block(i)
        block.gate.set_mode("open")
        opened = block(i)
        block.gate.set_mode("closed")
        closed = block(i)
    torch.testing.assert_close(mixed, expected, rtol=1e-5, atol=1e-5)
    on = mask.bool()[:, None].expand_as(mixed)
    torch.testing.assert_close(mixed[on], opened[on])
    torch.testing.assert_close(mixed[~on], closed[~on])


def test_gate_gradient_reaches_logits_through_the_block():
    net = randomise_bn(build_backbone("resnet_tiny"))  # timm zero-inits bn3, which would hide Z
    convert_to_pag(net, ["res5"])
    block = pag_blocks(net)[0][1].train()
    block.gate.tau = 0.5
    block(torch.randn(2, block.conv1.in_channels, 6, 6)).square().mean().backward()
    assert block.gate.conv.weight.grad.abs().sum() > 0


def test_convert_rejects_unknown_blocks_and_bad_bottlenecks():
    net = build_backbone("resnet_tiny")
    with pytest.raises(ValueError, match="unknown macro block 'res7'; allowed: res2, res3, res4, res5"):
        convert_to_pag(net, ["res7"])
    with pytest.raises(ValueError, match="stride-1 timm Bottleneck"):
        PAGBottleneck(net.layer2[0])  # strided, with a projection shortcut
