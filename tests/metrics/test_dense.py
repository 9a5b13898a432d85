"""Depth, surface-normal and computation meters against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pag_model.metrics import ComputationMeter, DepthMeter, NormalsMeter


def test_depth_metrics_by_hand_with_invalid_pixels() -> None:
    pred = torch.tensor([[[1.0, 1.2, 1.5, 3.0, 7.0]]])
    gt = torch.tensor([[[1.0, 1.0, 1.0, 2.0, float("nan")]]])
    valid = torch.tensor([[[True, True, True, True, False]]])
    meter = DepthMeter()
    meter.update(pred, gt, valid)
    r = meter.compute()
    # Ratios max(g/p, p/g) = 1, 1.2, 1.5, 1.5.
    assert r["delta1"] == pytest.approx(2 / 4)
    assert r["delta2"] == pytest.approx(4 / 4)
    assert r["delta3"] == pytest.approx(1.0)
    assert r["abs_rel"] == pytest.approx((0 + 0.2 + 0.5 + 0.5) / 4)
    assert r["sq_rel"] == pytest.approx((0 + 0.04 + 0.25 + 0.5) / 4)
    assert r["rmse"] == pytest.approx(math.sqrt((0 + 0.04 + 0.25 + 1.0) / 4))
    assert r["rmse_log"] == pytest.approx(math.sqrt((math.log(1.2) ** 2 + 2 * math.log(1.5) ** 2) / 4))
    assert r["log10"] == pytest.approx((math.log10(1.2) + 2 * math.log10(1.5)) / 4)


def test_depth_pools_pixels_across_images_and_clamps_predictions() -> None:
    meter = DepthMeter(min_depth=0.5)
    # Image 1: one pixel, error 1. Image 2: three pixels, error 0 (the 0.1 is clamped to 0.5).
    meter.update(np.array([[[2.0]]]), np.array([[[1.0]]]), np.array([[[True]]]))
    meter.update(np.array([[[1.0, 2.0, 0.1]]]), np.array([[[1.0, 2.0, 0.5]]]), np.array([[[True, True, True]]]))
    r = meter.compute()
    assert r["abs_rel"] == pytest.approx(1 / 4)   # pooled: (1 + 0 + 0 + 0) / 4, not mean of (1, 0)
    assert r["rmse"] == pytest.approx(math.sqrt(1 / 4))


def test_depth_shards_merge_exactly() -> None:
    generator = torch.Generator().manual_seed(0)
    pred = torch.rand(4, 5, 6, generator=generator) * 9 + 0.5
    gt = torch.rand(4, 5, 6, generator=generator) * 9 + 0.5
    valid = torch.rand(4, 5, 6, generator=generator) > 0.3
    single = DepthMeter()
    single.update(pred, gt, valid)
    a, b = DepthMeter(), DepthMeter()
    a.update(pred[:3], gt[:3], valid[:3])
    b.update(pred[3:], gt[3:], valid[3:])
    merged = DepthMeter.from_state(a.state_dict()).merge(DepthMeter.from_state(b.state_dict()))
    assert merged.compute() == pytest.approx(single.compute(), rel=1e-12)


def test_bad_depth_inputs() -> None:
    meter = DepthMeter()
    ok = torch.ones(1, 2, 2)
    valid = torch.ones(1, 2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="shape mismatch"):
        meter.update(ok, torch.ones(1, 2, 3), valid)
    with pytest.raises(ValueError, match="NaN"):
        meter.update(torch.full((1, 2, 2), float("nan")), ok, valid)
    with pytest.raises(ValueError, match="depth > 0"):
        meter.update(ok, torch.zeros(1, 2, 2), valid)
    with pytest.raises(TypeError, match="bool mask"):
        meter.update(ok, ok, torch.ones(1, 2, 2))
    meter.update(ok, ok, torch.zeros(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="empty ground truth"):
        meter.compute()


def unit(angle_deg: float, length: float = 1.0) -> list[float]:
    a = math.radians(angle_deg)
    return [length * math.sin(a), 0.0, length * math.cos(a)]


def normals_batch(angles: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 3, 1, N) predictions at `angles` degrees from a +z ground truth, various lengths."""
    pred = torch.tensor([unit(a, 0.5 + k) for k, a in enumerate(angles)]).T.reshape(1, 3, 1, -1)
    gt = torch.tensor([[0.0, 0.0, 2.0]] * len(angles)).T.reshape(1, 3, 1, -1)
    return pred, gt


def test_normal_metrics_by_hand() -> None:
    pred, gt = normals_batch([0.0, 10.0, 45.0, 90.0, 170.0])
    valid = torch.tensor([[[True, True, True, True, False]]])
    meter = NormalsMeter()
    meter.update(pred, gt, valid)
    r = meter.compute()
    assert r["mean"] == pytest.approx((0 + 10 + 45 + 90) / 4)
    assert r["median"] == pytest.approx(27.5, abs=0.01)
    assert r["rmse"] == pytest.approx(math.sqrt((100 + 45**2 + 90**2) / 4))
    assert r["within_11.25"] == pytest.approx(2 / 4)
    assert r["within_22.5"] == pytest.approx(2 / 4)
    assert r["within_30"] == pytest.approx(2 / 4)


def test_normals_pooled_median_is_within_0_01_degree_and_merges() -> None:
    generator = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 3, 7, 9, generator=generator)
    gt = torch.randn(3, 3, 7, 9, generator=generator)
    valid = torch.rand(3, 7, 9, generator=generator) > 0.2
    single = NormalsMeter()
    single.update(pred, gt, valid)
    p = pred.permute(0, 2, 3, 1)[valid].double()
    g = gt.permute(0, 2, 3, 1)[valid].double()
    cos = (p * g).sum(1) / (p.norm(dim=1) * g.norm(dim=1))
    angles = np.degrees(np.arccos(np.clip(cos.numpy(), -1, 1)))
    r = single.compute()
    assert r["median"] == pytest.approx(float(np.median(angles)), abs=0.01)
    assert r["mean"] == pytest.approx(float(angles.mean()))
    a, b = NormalsMeter(), NormalsMeter()
    a.update(pred[:1], gt[:1], valid[:1])
    b.update(pred[1:], gt[1:], valid[1:])
    merged = NormalsMeter.from_state(a.state_dict()).merge(b)
    assert merged.compute() == pytest.approx(r, rel=1e-12)


def test_bad_normal_inputs() -> None:
    meter = NormalsMeter()
    pred, gt = normals_batch([0.0, 5.0])
    valid = torch.ones(1, 1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="valid: expected shape"):
        meter.update(pred, gt, torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        meter.update(pred * float("nan"), gt, valid)
    with pytest.raises(ValueError, match="zero-length"):
        meter.update(pred * 0, gt, valid)
    with pytest.raises(ValueError, match="3 channels"):
        meter.update(pred[:, :2], gt[:, :2], valid)
    with pytest.raises(ValueError, match="empty ground truth"):
        meter.compute()


def test_computation_means_ratio_and_densities() -> None:
    meter = ComputationMeter()
    meter.update(torch.tensor([60.0, 80.0]), torch.tensor([100.0, 100.0]), {"res4.0": torch.tensor([0.5, 0.7])})
    meter.update(np.array([40.0]), np.array([100.0]), {"res4.0": np.array([0.3])})
    r = meter.compute()
    assert r["macs"] == pytest.approx(60.0)
    assert r["flops"] == pytest.approx(120.0)
    assert r["macs_ratio"] == pytest.approx(0.6)
    assert r["density/res4.0"] == pytest.approx(0.5)
    other = ComputationMeter.from_state(meter.state_dict())
    assert other.merge(meter).compute() == pytest.approx(r)
    with pytest.raises(ValueError, match="differ from earlier"):
        meter.update(torch.tensor([1.0]), torch.tensor([2.0]), {"res5.0": torch.tensor([0.1])})
    with pytest.raises(ValueError, match="shape mismatch"):
        meter.update(torch.tensor([1.0, 2.0]), torch.tensor([2.0]), {"res4.0": torch.tensor([0.1])})
    with pytest.raises(ValueError, match="no images"):
        ComputationMeter().compute()
