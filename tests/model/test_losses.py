"""Task losses (Eqs. 7-10) against values computed by hand on tiny examples."""
import math

import pytest
import torch

from pag_model import boundary_loss, depth_loss, normal_loss, semantic_loss, task_loss


def sig(v):
    return 1 / (1 + math.exp(-v))


def test_boundary_loss_is_class_balanced_and_summed_over_branches():
    label = torch.tensor([[[1, 0], [255, 0]]])
    a = torch.tensor([[[[0.5, -1.0], [3.0, 2.0]]]])
    b = torch.tensor([[[[-0.2, 0.1], [0.0, -3.0]]]])
    # Y = 3 valid pixels, |Y+| = 1, |Y-| = 2: beta+ = 2/3 on the boundary pixel, beta- = 1/3 on the others.
    def branch(l):
        return (2 / 3 * -math.log(sig(l[0][0])) + 1 / 3 * -math.log(1 - sig(l[0][1])) + 1 / 3 * -math.log(1 - sig(l[1][1]))) / 3
    expected = branch(a[0, 0].tolist()) + branch(b[0, 0].tolist())
    assert boundary_loss([a, b], label).item() == pytest.approx(expected, rel=1e-5)


def test_semantic_loss_ignores_label_255():
    logits = torch.tensor([[[[1.0, 5.0]], [[2.0, -5.0]], [[0.5, 9.0]]]])  # (1, 3, 1, 2)
    label = torch.tensor([[[2, 255]]])
    expected = -math.log(math.exp(0.5) / (math.exp(1.0) + math.exp(2.0) + math.exp(0.5)))
    assert semantic_loss(logits, label).item() == pytest.approx(expected, rel=1e-5)
    assert semantic_loss(logits, torch.full((1, 1, 2), 255)).item() == 0.0


def test_depth_loss_is_l2_plus_gamma_l1_on_log_depth_over_valid_pixels():
    pred = torch.tensor([[[[math.log(2.0) + 0.5, math.log(1.0) - 0.25, 7.0]]]])
    gt = torch.tensor([[[2.0, 1.0, 5.0]]])
    valid = torch.tensor([[[True, True, False]]])
    expected = ((0.5**2 + 2 * 0.5) + (0.25**2 + 2 * 0.25)) / 2
    assert depth_loss(pred, gt, valid).item() == pytest.approx(expected, rel=1e-5)


def test_normal_loss_is_minus_cos_plus_four_acos_with_finite_gradient_at_one():
    theta = math.radians(60)
    pred = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])[None, :, None, :]  # (1, 3, 1, 2)
    gt = torch.tensor([[math.cos(theta), 0.0], [math.sin(theta), 0.0], [0.0, 1.0]])[None, :, None, :]
    valid = torch.tensor([[[True, False]]])
    assert normal_loss(pred, gt, valid).item() == pytest.approx(-0.5 + 4 * math.pi / 3, rel=1e-5)
    same = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).repeat(1, 1, 2, 2).requires_grad_()
    normal_loss(same, same.detach().clone(), torch.ones(1, 2, 2, dtype=torch.bool)).backward()
    assert torch.isfinite(same.grad).all() and same.grad.abs().sum() > 0


def test_task_loss_sums_tasks_and_rejects_unknown_ones():
    outputs = {"depth": torch.zeros(1, 1, 1, 2)}
    batch = {"depth": torch.tensor([[[1.0, math.e]]]), "depth_valid": torch.ones(1, 1, 2, dtype=torch.bool)}
    total, parts = task_loss(outputs, batch, ["depth"], weights={"depth": 2.0})
    assert parts["depth"].item() == pytest.approx((0 + 0 + 1 + 2) / 2)
    assert total.item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="unknown task 'edges'"):
        task_loss(outputs, batch, ["edges"])
