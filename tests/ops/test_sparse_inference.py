"""Sparse (perforated) inference of whole PAG models agrees with dense-masked inference.

The reference is the model's own dense-masked eval path (conv2 and every MultiPool branch
computed everywhere, then combined with the masks), which the lead's blocks implement from
the paper's Eq. 2; the perforated path is this project's ops. BatchNorm statistics and
MultiPool selectors are randomised so that folding and branch choice are exercised.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pag_model import MultiPool, PAGBottleneck, PAGNet
from pag_model.ops import BACKEND_ENV
from pag_model.ops.crossover import crossing, measure_crossover
from pag_model.sparse import (
    calibrate_thresholds,
    fold_batchnorm,
    from_perforated,
    perforated_layers,
    to_perforated,
)

from tests.support.backends import BACKENDS, _reference_unless_parametrised, backend  # noqa: F401 (fixtures)


def randomise(model: nn.Module) -> None:
    """Random BN statistics/affine and a strong MultiPool selector, so nothing is trivial."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, MultiPool):
                m.selector.weight.normal_(0, 0.5)


def tiny_model() -> PAGNet:
    model = PAGNet(backbone="resnet_tiny", tasks=("semantic",), num_classes=5, multipool="res5",
                   gated=("res3", "res4", "res5"), head_channels=16)
    randomise(model)
    return model.eval()


def fix_gates(model: PAGNet, images: torch.Tensor, density: float) -> None:
    """Every gate in "fixed" mode with its own random mask of the given density."""
    size = images.shape[-1] // model.output_stride
    for _, gate in model.gates():
        gate.set_mode("fixed", (torch.rand(images.shape[0], size, size) < density).float())


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def conv_calls(model: nn.Module) -> tuple[dict[str, int], list]:
    """Count calls of the convolutions that perforated inference replaces."""
    calls = {name: 0 for name in perforated_layers(model)}
    handles = []
    for name, conv in perforated_layers(model).items():
        def hook(module, inputs, name=name):
            calls[name] += 1
        handles.append(conv.register_forward_pre_hook(hook))
    return calls, handles


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("gates", ["fixed", "learned"])
def test_perforated_matches_dense_masked(backend: str, gates: str) -> None:
    model = tiny_model()
    images = torch.randn(2, 3, 64, 64)
    if gates == "fixed":
        fix_gates(model, images, 0.5)
    else:
        with torch.no_grad():  # input-dependent masks of roughly half density
            for _, gate in model.gates():
                gate.conv.weight.normal_(0, 0.3)
                gate.conv.bias.zero_()
    with torch.no_grad():
        dense = model(images)["semantic"]
        masks = [gate.last_mask.clone() for _, gate in model.gates()]
        selection = model.multipools()[0].last_selection.argmax(1)
        names = to_perforated(model)
        assert set(names) == set(perforated_layers(model))
        calls, handles = conv_calls(model)
        sparse = model(images)["semantic"]
        for h in handles:
            h.remove()
    densities = [m.mean().item() for m in masks]
    assert 0.2 < sum(densities) / len(densities) < 0.8, densities  # a real mix of on and off
    assert len(selection.unique()) >= 3  # several MultiPool branches are in use
    assert all(count == 0 for count in calls.values()), calls  # no dense 3x3 conv ran
    assert relative_error(sparse, dense) < 1e-4


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_thresholds_route_to_dense_and_agree(backend: str) -> None:
    model = tiny_model()
    images = torch.randn(1, 3, 64, 64)
    fix_gates(model, images, 0.6)
    with torch.no_grad():
        dense = model(images)["semantic"]
        # 0.5 < 0.6: every gated conv runs its dense fallback; MultiPool branches (each chosen
        # by a minority of pixels) stay perforated.
        to_perforated(model, threshold=0.5)
        calls, handles = conv_calls(model)
        mixed = model(images)["semantic"]
        for h in handles:
            h.remove()
    assert relative_error(mixed, dense) < 1e-4
    gated = [m for m in model.modules() if isinstance(m, PAGBottleneck)]
    assert all(b.sparse_conv2.threshold == 0.5 for b in gated)
    assert all(count == 0 for count in calls.values())  # fallback uses the folded conv


def test_from_perforated_and_training_use_the_dense_path() -> None:
    model = tiny_model()
    images = torch.randn(1, 3, 64, 64)
    fix_gates(model, images, 0.5)
    to_perforated(model)
    model.train()
    calls, handles = conv_calls(model)
    model(images)
    assert all(count == 1 for count in calls.values()), calls  # training: dense everywhere
    model.eval()
    assert from_perforated(model) == len([m for m in model.modules() if isinstance(m, (PAGBottleneck, MultiPool))])
    with torch.no_grad():
        model(images)
    assert all(count == 2 for count in calls.values()), calls
    for h in handles:
        h.remove()
    # Converted models save the same checkpoint keys as unconverted ones.
    keys = set(model.state_dict())
    to_perforated(model)
    assert set(model.state_dict()) == keys


def test_fold_batchnorm_equals_conv_then_bn() -> None:
    conv = nn.Conv2d(4, 6, 3, padding=2, dilation=2, bias=True)
    bn = nn.BatchNorm2d(6)
    randomise(nn.Sequential(conv, bn))
    bn.eval()
    x = torch.randn(2, 4, 9, 9)
    weight, bias = fold_batchnorm(conv, bn)
    torch.testing.assert_close(F.conv2d(x, weight, bias, padding=2, dilation=2), bn(conv(x)),
                               rtol=1e-5, atol=1e-5)


def test_crossing_hand_values() -> None:
    # perforated - dense: -1 at 0.5, +1 at 1.0 -> crosses halfway, at 0.75.
    assert crossing([0.5, 1.0], [1.0, 3.0], [2.0, 2.0]) == pytest.approx(0.75)
    assert crossing([0.5, 1.0], [1.0, 1.5], [2.0, 2.0]) is None
    assert crossing([0.5, 1.0], [2.5, 3.0], [2.0, 2.0]) == 0.5


def test_measure_and_calibrate_thresholds() -> None:
    weight = torch.randn(8, 8, 3, 3)
    cross, rows = measure_crossover((1, 8, 16, 16), weight, None, 2, densities=(0.5, 1.0), repeats=1)
    assert [r[0] for r in rows] == [0.5, 1.0] and all(r[1] > 0 and r[2] > 0 for r in rows)
    assert cross is None or 0.5 <= cross <= 1.0
    model = tiny_model()
    images = torch.randn(1, 3, 32, 32)
    thresholds = calibrate_thresholds(model, images, densities=(0.5, 1.0), repeats=1)
    assert set(thresholds) == set(perforated_layers(model))
    assert all(t is None or 0.0 <= t <= 1.0 for t in thresholds.values())
    to_perforated(model, threshold=thresholds)
    chosen = {b.sparse_conv2.name: b.sparse_conv2.threshold for b in model.modules() if isinstance(b, PAGBottleneck)}
    assert all(thresholds[name] == value for name, value in chosen.items())


def test_unsupported_block_is_refused() -> None:
    model = tiny_model()
    block = next(m for m in model.modules() if isinstance(m, PAGBottleneck))
    block.act2 = nn.GELU()
    with pytest.raises(ValueError, match="fuses BatchNorm2d \\+ ReLU, got .*GELU"):
        to_perforated(model)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["autocast", "bf16 model"])
def test_bf16_perforated_matches_bf16_dense_masked(monkeypatch, mode: str) -> None:
    """bf16 inference (autocast or a bf16 model) runs the compiled kernel and agrees with the
    dense-masked model at the same precision (bf16 vs fp32 differ by ~10% on this deep tiny
    net, so the fp32 model is no oracle here)."""
    monkeypatch.setenv(BACKEND_ENV, "cpp")
    model = tiny_model()
    images = torch.randn(2, 3, 64, 64)
    fix_gates(model, images, 0.5)
    if mode == "bf16 model":
        model, images = model.to(torch.bfloat16), images.to(torch.bfloat16)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=mode == "autocast"):
        dense = model(images)["semantic"]
        to_perforated(model)
        calls, handles = conv_calls(model)
        sparse = model(images)["semantic"]
        for h in handles:
            h.remove()
    assert sparse.dtype == torch.bfloat16
    assert all(count == 0 for count in calls.values()), calls
    assert relative_error(sparse.float(), dense.float()) < 3e-2


@pytest.mark.slow
def test_block_writes_y_into_x_in_place(monkeypatch) -> None:
    """The PAG block's Gbar*X + G*Y is X's own buffer with Y stored at the active pixels."""
    monkeypatch.setenv(BACKEND_ENV, "cpp")
    model = tiny_model()
    to_perforated(model)
    block = next(m for m in model.modules() if isinstance(m, PAGBottleneck))
    conv, bn = block.conv2, block.bn2
    x = torch.randn(2, conv.in_channels, 9, 7).contiguous(memory_format=torch.channels_last)
    mask = torch.rand(2, 9, 7) < 0.5
    with torch.no_grad():
        y = torch.relu(bn(conv(x)))
        expected = torch.where(mask[:, None], y, x)
        got = block.sparse_conv2(x, mask)
    assert got.data_ptr() == x.data_ptr()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # With autograd recording, X is left alone and the result is a new tensor.
    x2 = torch.randn(1, conv.in_channels, 9, 7, requires_grad=True).contiguous(memory_format=torch.channels_last)
    before = x2.detach().clone()
    out = block.sparse_conv2(x2, mask[:1])
    assert out.data_ptr() != x2.data_ptr() and torch.equal(x2.detach(), before)
