"""Gumbel straight-through gates and the tau schedule against hand computations (Eqs. 3-4)."""
import math

import pytest
import torch
import torch.nn.functional as F

from pag_model import GumbelGate, TauSchedule, gumbel_straight_through


def test_forward_is_exactly_binary_one_hot():
    logits = torch.randn(3, 5, 7, 9) * 3
    out = gumbel_straight_through(logits, tau=0.37)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(out.sum(dim=1), torch.ones(3, 7, 9))


def test_sample_is_argmax_of_logits_plus_gumbel_noise():
    logits = torch.randn(2, 3, 4, 4)
    torch.manual_seed(123)
    out = gumbel_straight_through(logits, tau=1.0)
    torch.manual_seed(123)
    u = torch.rand(logits.shape)
    m = -torch.log(-torch.log(u))  # Eq. 3 noise, by hand
    expected = F.one_hot((logits + m).argmax(1), 3).permute(0, 3, 1, 2).float()
    assert torch.equal(out, expected)


def test_gradient_is_that_of_the_softmax_relaxation():
    """Backward equals d/dz of sum(w * softmax(z / tau)), computed by hand from the Jacobian."""
    tau = 0.5
    z = torch.randn(1, 3, 2, 2, requires_grad=True)
    w = torch.randn(1, 3, 2, 2)
    (gumbel_straight_through(z, tau, noise=False) * w).sum().backward()
    s = torch.softmax(z.detach() / tau, dim=1)
    # d s_i / d z_j = s_i (delta_ij - s_j) / tau  =>  grad_j = s_j (w_j - sum_i w_i s_i) / tau
    expected = s * (w - (w * s).sum(1, keepdim=True)) / tau
    torch.testing.assert_close(z.grad, expected, rtol=1e-5, atol=1e-6)


def test_gate_modes_and_eval_is_deterministic_argmax():
    gate = GumbelGate(8)
    x = torch.randn(2, 8, 5, 6)
    gate.eval()
    logits = gate.logits(x)
    expected = (logits[:, 1] > logits[:, 0]).float()[:, None]
    assert torch.equal(gate(x), expected) and torch.equal(gate(x), expected)
    gate.set_mode("open")
    assert torch.equal(gate(x), torch.ones(2, 1, 5, 6))
    gate.set_mode("closed")
    assert torch.equal(gate(x), torch.zeros(2, 1, 5, 6))
    fixed = (torch.rand(5, 6) > 0.5).float()
    gate.set_mode("fixed", fixed)
    assert torch.equal(gate(x)[:, 0], fixed.expand(2, 5, 6))
    with pytest.raises(ValueError, match="allowed: learned, open, closed, fixed"):
        gate.set_mode("sometimes")
    gate.set_mode("fixed", torch.ones(4, 4))
    with pytest.raises(ValueError, match=r"needs \(2, 5, 6\)"):
        gate(x)


def test_training_gate_passes_gradient_to_its_conv():
    gate = GumbelGate(4)
    gate.train()
    gate.tau = 0.5
    x = torch.randn(2, 4, 6, 6)
    (gate(x) * torch.randn(2, 1, 6, 6)).sum().backward()
    assert gate.conv.weight.grad is not None and gate.conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "shape,expected_mid",
    [("linear", 0.55), ("exponential", math.sqrt(0.1)), ("cosine", 0.55), ("constant", 1.0)],
)
def test_tau_schedule_values(shape, expected_mid):
    s = TauSchedule(start=1.0, end=0.1, total_iters=100, shape=shape)
    assert s.value(0) == pytest.approx(1.0)
    assert s.value(50) == pytest.approx(expected_mid)
    if shape != "constant":
        assert s.value(100) == pytest.approx(0.1) and s.value(10_000) == pytest.approx(0.1)
    if shape == "cosine":
        assert s.value(25) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))


def test_tau_schedule_checkpoints_and_rejects_bad_values():
    s = TauSchedule(1.0, 0.1, 40, "cosine")
    restored = TauSchedule()
    restored.load_state_dict(s.state_dict())
    assert [restored.value(i) for i in range(45)] == [s.value(i) for i in range(45)]
    with pytest.raises(ValueError, match="shape 'step'"):
        TauSchedule(shape="step")
    with pytest.raises(ValueError, match="must be > 0"):
        TauSchedule(start=0.0)
