"""MultiPool (Sec. 3.4) against hand-computed dilated convolutions and weighted sums."""
import pytest
import torch
import torch.nn.functional as F

from pag_model import MultiPool
from tests.model.test_blocks import randomise_bn


def branch_by_hand(mp, i, x):
    """Branch i computed with F.conv2d and the BatchNorm formula; dilation 0 copies x."""
    d = mp.dilations[i]
    if d == 0:
        return x
    conv, bn = mp.branches[i][0], mp.branches[i][1]
    y = F.conv2d(x, conv.weight, padding=d, dilation=d)
    y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    return F.relu(y * bn.weight[:, None, None] + bn.bias[:, None, None])


@pytest.fixture
def mp():
    return randomise_bn(MultiPool(6, dilations=[0, 1, 2, 4, 10])).eval()


def test_forced_branch_equals_that_dilated_conv(mp):
    x = torch.randn(2, 6, 13, 11)
    with torch.no_grad():
        for i in range(len(mp.dilations)):
            mp.force_branch(i)
            torch.testing.assert_close(mp(x), branch_by_hand(mp, i, x), rtol=1e-5, atol=1e-5)


def test_pag_variant_takes_exactly_one_branch_per_pixel(mp):
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        mp.selector.weight.normal_(std=1.0)  # a varied choice across pixels
        out = mp(x)
        w = mp.last_selection
        assert torch.equal(w.sum(1), torch.ones(2, 9, 9)) and set(w.unique().tolist()) == {0.0, 1.0}
        choice = F.conv2d(x, mp.selector.weight, mp.selector.bias).argmax(1)  # eval: argmax, no noise
        assert torch.equal(w.argmax(1), choice)
        assert len(choice.unique()) > 1
        expected = torch.stack([branch_by_hand(mp, i, x) for i in range(5)], 1)
        expected = expected.gather(1, choice[:, None, None].expand(2, 1, 6, 9, 9))[:, 0]
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_weighted_average_variant_equals_softmax_weighted_sum():
    mp = randomise_bn(MultiPool(4, dilations=[0, 2, 6], variant="wavg")).eval()
    x = torch.randn(1, 4, 10, 10)
    with torch.no_grad():
        mp.selector.weight.normal_()
        w = torch.softmax(F.conv2d(x, mp.selector.weight, mp.selector.bias), dim=1)
        expected = sum(w[:, i : i + 1] * branch_by_hand(mp, i, x) for i in range(3))
        torch.testing.assert_close(mp(x), expected, rtol=1e-5, atol=1e-5)


def test_training_selection_is_one_hot_with_gradient():
    mp = MultiPool(4, dilations=[0, 1, 2]).train()
    x = torch.randn(2, 4, 6, 6)
    mp(x).square().mean().backward()
    assert torch.equal(mp.last_selection.sum(1), torch.ones(2, 6, 6))
    assert mp.selector.weight.grad.abs().sum() > 0


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="non-empty list"):
        MultiPool(4, dilations=[])
    with pytest.raises(ValueError, match="distinct and >= 0"):
        MultiPool(4, dilations=[1, 1])
    with pytest.raises(ValueError, match="variant 'max'"):
        MultiPool(4, variant="max")
    with pytest.raises(ValueError, match="branch index 9 out of range"):
        MultiPool(4).force_branch(9)
