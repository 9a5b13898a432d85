"""KL sparsity loss (Eqs. 5-6) against hand-computed values, and its effect on density."""
import math

import pytest
import torch

from pag_model import GumbelGate, PAGNet, kl_divergence, sparsity_loss


def kl_by_hand(rho: float, g: float) -> float:
    return rho * math.log(rho / g) + (1 - rho) * math.log((1 - rho) / (1 - g))


@pytest.mark.parametrize("rho,g", [(0.5, 0.25), (0.9, 0.7), (0.3, 0.95), (0.7, 0.7)])
def test_kl_matches_equation_5(rho, g):
    assert kl_divergence(rho, torch.tensor(g)).item() == pytest.approx(kl_by_hand(rho, g), rel=1e-4, abs=1e-6)


def test_kl_is_finite_with_gradient_at_zero_and_one():
    g = torch.tensor([0.0, 1.0], requires_grad=True)
    kl = kl_divergence(0.5, g)
    kl.sum().backward()
    assert torch.isfinite(kl).all() and torch.isfinite(g.grad).all()
    assert g.grad[0] < 0 < g.grad[1]  # pushes 0 up and 1 down, towards rho
    assert kl_divergence(1.0, torch.tensor(1.0)).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("rho", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("pixels", [16, 64, 4096])
def test_gradient_reaching_each_pixel_is_bounded_when_all_pixels_are_open_or_closed(rho, pixels):
    """The mean over `pixels` hands each pixel 1/pixels of dKL/dg; with the half-pixel
    smoothing that stays below 2 max(rho, 1 - rho) at g = 0 and g = 1 (a fixed 1e-6 floor
    gives rho / (1e-6 * pixels): thousands for an 8x8 gate map)."""
    g = torch.tensor([0.0, 1.0], requires_grad=True)
    kl = kl_divergence(rho, g, pixels)
    kl.sum().backward()
    per_pixel = g.grad.abs() / pixels
    assert torch.isfinite(kl).all()
    assert (per_pixel <= 2 * max(rho, 1 - rho)).all(), per_pixel
    assert g.grad[0] < 0 < g.grad[1]  # still towards rho
    # By hand: g' = 1/2 / (pixels + 1) for an all-closed mask.
    assert kl[0].item() == pytest.approx(kl_by_hand(rho, 0.5 / (pixels + 1)), rel=1e-4)


def test_sparsity_loss_sums_per_layer_kl_times_lambda():
    net = PAGNet("resnet_tiny", num_classes=3, multipool=None, gated=("res4", "res5"), init_open_prob=0.6)
    net.train()
    net(torch.randn(2, 3, 64, 64))
    loss, dens = sparsity_loss(net, rho=0.6, lam=0.01)
    assert set(dens) == {"backbone.layer3.1.gate", "backbone.layer4.1.gate"}  # block 0 has a projection shortcut
    # Each 64x64 image gives an 8x8 gate map (output stride 8): g' = (open pixels + 1/2) / 65.
    expected = 0.01 * sum(sum(kl_by_hand(0.6, (v * 64 + 0.5) / 65) for v in d.tolist()) / 2 for d in dens.values())
    assert loss.item() == pytest.approx(expected, rel=1e-3)
    net.set_gate_mode("open", ["res4"])
    _, dens = sparsity_loss(net, 0.6, 0.01)
    assert set(dens) == {"backbone.layer4.1.gate"}  # gates not in learned mode do not count


@pytest.mark.parametrize("rho", [0.3, 0.7])
def test_optimising_gate_logits_under_kl_reaches_rho(rho):
    torch.manual_seed(0)
    gate = GumbelGate(4, init_open_prob=0.95)
    gate.train()
    gate.tau = 0.5
    x = torch.randn(4, 4, 32, 32)
    opt = torch.optim.Adam(gate.parameters(), lr=0.05)
    for _ in range(300):
        g = gate(x).flatten(1).mean(1)
        loss = kl_divergence(rho, g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        density = torch.stack([gate(x).mean() for _ in range(20)]).mean().item()
    assert abs(density - rho) < 0.02


def test_bad_rho_and_lambda_are_named():
    net = PAGNet("resnet_tiny", num_classes=3, multipool=None, gated=("res5",))
    net(torch.randn(1, 3, 16, 16))
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=rf"rho .* must be in \(0, 1\], got {bad}"):
            sparsity_loss(net, bad, 1e-4)
    with pytest.raises(ValueError, match="lambda"):
        sparsity_loss(net, 0.5, -1.0)
