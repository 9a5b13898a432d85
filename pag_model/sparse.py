"""Sparse inference for PAG models: skipped pixels cost nothing (PAG paper, Figs. 2-3).

`to_perforated(model)` puts the model in channels-last memory format and gives every PAG
bottleneck a `sparse_conv2` that computes its 3x3 conv (BatchNorm folded into weight and
bias, ReLU fused) only at the gate's active pixels, and every MultiPool a `sparse_branches`
that computes, for each pixel, only the branch the pixel selected. The blocks use them in
eval mode; training keeps the dense, multiplicative path that the straight-through
estimator needs. `from_perforated(model)` removes them again (the model stays channels-last).

On the CPU without autograd the layers run the compiled kernel with a weight packed once
per layer and dtype (`pag_model.ops.cpu.PackedConv`) and write in place: the block's
Gbar*X + G*Y is X with Y stored at the active pixels (X, the block's conv1 output, is not
needed afterwards), and MultiPool's branches store into one output map. No fill copy, no
zero fill, no layout copy. bf16/fp16 models and `torch.autocast("cpu", torch.bfloat16)` run
the kernel in the activations' dtype (fp32 accumulation). Elsewhere (CUDA, autograd,
torch.compile) the functional `perforated_conv2d` runs.

Above some density the dense convolution is faster than the perforated one (gather and
scatter cost something). Each layer therefore has a threshold: when the active fraction of
its mask exceeds it, the layer runs dense (conv, then where). Thresholds are measured per
layer shape by `calibrate_thresholds` (timing in `pag_model.ops.crossover`) and passed in as a dict, or
given as one float, or None (always perforated).

The folded weights are a snapshot: call `to_perforated` after loading the final weights.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .blocks import PAGBottleneck
from .multipool import MultiPool
from .ops import perforated_conv2d, tap_major
from .ops.cpu import PackedConv, usable
from .ops.crossover import DEFAULT_DENSITIES, measure_crossover

Threshold = Union[None, float, dict[str, float]]


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight (Co, C, k, k) and bias (Co,) of conv followed by bn in eval (running statistics),
    through torch's own `fuse_conv_bn_weights`."""
    weight, bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    return weight.detach(), bias.detach()


def fold_batchnorms(model: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d into it (eval statistics), in place.

    Pairs: attributes convN / bnN of one module (timm bottlenecks, stems; convN may be a
    Sequential ending in a Conv2d, as timm's deep stem) and consecutive
    Conv2d, BatchNorm2d entries of an nn.Sequential (downsample, heads, MultiPool
    branches). Each folded BatchNorm2d becomes nn.Identity and its conv gains the bias. An
    inference-only transform (training statistics are gone); call `to_perforated` first, as
    it looks for the BatchNorm2d it folds itself. Returns the number of pairs folded.
    """
    pairs: list[tuple[nn.Module, str, nn.Conv2d, nn.BatchNorm2d]] = []
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            items = list(module.named_children())
            for (_, a), (name, b) in zip(items, items[1:]):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    pairs.append((module, name, a, b))
            continue
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm2d) and name.startswith("bn"):
                conv = getattr(module, "conv" + name[2:], None)
                if isinstance(conv, nn.Sequential) and len(conv) and isinstance(conv[-1], nn.Conv2d):
                    conv = conv[-1]  # a deep stem (timm's stem_type="deep") ends in its conv
                if isinstance(conv, nn.Conv2d):
                    pairs.append((module, name, conv, child))
    for parent, name, conv, bn in pairs:
        if conv.out_channels != bn.num_features:
            raise ValueError(f"{name}: BatchNorm2d({bn.num_features}) after a conv with {conv.out_channels} outputs")
        weight, bias = fold_batchnorm(conv, bn)
        conv.weight.copy_(weight)
        conv.bias = nn.Parameter(bias, requires_grad=False)
        setattr(parent, name, nn.Identity())
    return len(pairs)


class PerforatedConvBNReLU(nn.Module):
    """where(mask, relu(bn(conv(x))), fill) with the conv computed only where mask is true.

    Args:
        conv: a 3x3 (odd k), stride-1, ungrouped Conv2d with padding = dilation * (k // 2).
        bn: the BatchNorm2d after it (folded in, eval statistics).
        threshold: active fraction above which the dense conv runs instead; None: never.
        name: the layer's name, for error messages and calibration.
        overwrite_input: with fill None, write the result into x itself where the compiled
            CPU kernel runs (the caller must not need x afterwards: the PAG block's X).
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        bn: nn.BatchNorm2d,
        threshold: Optional[float] = None,
        name: str = "",
        overwrite_input: bool = False,
    ) -> None:
        super().__init__()
        k = conv.kernel_size[0]
        dilation = conv.dilation[0]
        same = conv.padding == (dilation * (k // 2),) * 2 and conv.dilation == (dilation, dilation)
        if conv.kernel_size != (k, k) or k % 2 == 0 or conv.stride != (1, 1) or conv.groups != 1 or not same:
            raise ValueError(
                f"{name or 'conv'}: perforated inference needs a stride-1, ungrouped, odd k x k conv with "
                f"'same' padding; got kernel {conv.kernel_size}, stride {conv.stride}, groups "
                f"{conv.groups}, padding {conv.padding}, dilation {conv.dilation}"
            )
        weight, bias = fold_batchnorm(conv, bn)
        # Not persistent: checkpoints of a converted model keep the original keys only.
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        self.register_buffer("weight_rows", tap_major(weight), persistent=False)
        self.dilation = dilation
        self.threshold = threshold
        self.name = name
        self.overwrite_input = overwrite_input
        self._packed: Optional[PackedConv] = None  # made on first CPU call (a weight snapshot)

    def use_dense(self, mask: torch.Tensor) -> bool:
        """True when the mask's active fraction is above this layer's threshold."""
        return self.threshold is not None and mask.float().mean().item() > self.threshold

    def dense(self, x: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        pad = self.dilation * (self.weight.shape[-1] // 2)
        weight, bias = self.weight, self.bias
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            weight, bias = weight.to(x.dtype), bias.to(x.dtype)
        y = torch.relu_(F.conv2d(x, weight, bias, padding=pad, dilation=self.dilation))
        return torch.where(mask[:, None], y, fill.to(y.dtype))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        fill: Optional[torch.Tensor] = None,
        out: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """x (B, C, H, W), mask (B, H, W) bool, fill (B, Co, H, W) or None (= x) -> (B, Co, H, W).

        out: a (B, Co, H, W) tensor holding `fill` that the compiled CPU kernel may write into
            in place and return (MultiPool's output map); ignored where it cannot run.
        """
        if self.use_dense(mask):
            return self.dense(x, mask, x if fill is None else fill)
        if usable(x):
            if self._packed is None:
                self._packed = PackedConv(self.weight, self.bias, self.dilation)
            if fill is None and self.overwrite_input and x.is_contiguous(memory_format=torch.channels_last):
                return self._packed.run_into_(x, x, mask, relu=True)
            if out is None:
                source = x if fill is None else fill
                out = source.to(x.dtype).clone(memory_format=torch.channels_last)
            return self._packed.run_into_(out, x, mask, relu=True)
        weight, bias, rows = self.weight, self.bias, self.weight_rows
        if x.dtype != weight.dtype:  # autocast or a model in another dtype than its snapshot
            weight, bias, rows = weight.to(x.dtype), bias.to(x.dtype), rows.to(x.dtype)
        fill = None if fill is None else fill.to(x.dtype)
        return perforated_conv2d(
            x, weight, mask, bias=bias, dilation=self.dilation, fill=x if fill is None else fill,
            relu=True, weight_rows=rows,
        )

    def extra_repr(self) -> str:
        return f"{self.name}: dilation={self.dilation}, threshold={self.threshold}"


class PerforatedMultiPool(nn.Module):
    """MultiPool's branches, each computed only at the pixels that selected it.

    Args:
        multipool: a MultiPool whose branches are Identity (dilation 0) or
            Sequential(Conv2d, BatchNorm2d, ReLU).
        thresholds: per branch index, the density above which that branch runs dense.
        name: the module's name, for messages and calibration.
    """

    def __init__(
        self,
        multipool: MultiPool,
        thresholds: Optional[dict[int, Optional[float]]] = None,
        name: str = "",
    ) -> None:
        super().__init__()
        thresholds = thresholds or {}
        self.copy_branches: list[int] = []
        self.convs = nn.ModuleDict()
        for i, (dilation, branch) in enumerate(zip(multipool.dilations, multipool.branches)):
            if dilation == 0:
                self.copy_branches.append(i)
                continue
            parts = list(branch) if isinstance(branch, nn.Sequential) else []
            ok = len(parts) == 3 and isinstance(parts[0], nn.Conv2d) and isinstance(parts[1], nn.BatchNorm2d)
            if not ok or not isinstance(parts[2], nn.ReLU):
                raise ValueError(f"{name}.branches.{i}: expected Sequential(Conv2d, BatchNorm2d, ReLU), got {branch}")
            self.convs[str(i)] = PerforatedConvBNReLU(
                parts[0], parts[1], thresholds.get(i), name=f"{name}.branches.{i}"
            )

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), index (B, H, W) int64 chosen branch -> (B, C, H, W)."""
        copy = torch.zeros_like(index, dtype=torch.bool)
        for i in self.copy_branches:
            copy |= index == i
        out = torch.where(copy[:, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        for i, conv in self.convs.items():
            # `out` is this method's own map: the CPU kernel stores into it in place.
            out = conv(x, index == int(i), fill=out, out=out)
        return out


def _threshold(threshold: Threshold, name: str) -> Optional[float]:
    if threshold is None or isinstance(threshold, (int, float)):
        return None if threshold is None else float(threshold)
    if name not in threshold:
        return None
    value = threshold[name]
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold for {name} must be in [0, 1] or None, got {value}")
    return value


def perforated_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """{layer name: conv} of every layer `to_perforated` replaces, in module order.

    Names: "<block>.conv2" for PAG bottlenecks, "<multipool>.branches.<i>" for MultiPool.
    """
    layers = {}
    for name, module in model.named_modules():
        if isinstance(module, PAGBottleneck):
            layers[f"{name}.conv2"] = module.conv2
        elif isinstance(module, MultiPool) and module.variant == "pag":
            for i, (d, branch) in enumerate(zip(module.dilations, module.branches)):
                if d != 0:
                    layers[f"{name}.branches.{i}"] = branch[0]
    return layers


@torch.no_grad()
def calibrate_thresholds(
    model: nn.Module,
    images: torch.Tensor,
    densities: Sequence[float] = DEFAULT_DENSITIES,
    repeats: int = 3,
) -> dict[str, Optional[float]]:
    """Measure each perforated layer's crossover density on this machine; pass to `to_perforated`.

    One dense forward of `images` records every layer's input shape; then each distinct
    (shape, weight shape, dilation, dtype, device) is timed once with `measure_crossover`.

    Args:
        model: the PAG model, with the weights and on the device it will run with.
        images: a representative input batch (its size sets the layer shapes).
        densities: ascending densities to time (the crossover is interpolated between them).
        repeats: timed calls per form and density.

    Returns:
        {layer name: density above which the layer runs dense, or None for never}.
    """
    layers = perforated_layers(model)
    shapes: dict[str, tuple[int, ...]] = {}
    def record(name: str):
        def hook(module: nn.Module, inputs: tuple) -> None:
            shapes.setdefault(name, tuple(inputs[0].shape))

        return hook

    hooks = [conv.register_forward_pre_hook(record(name)) for name, conv in layers.items()]
    saved = _detach_sparse(model)
    was_training = model.training
    try:
        model.eval()
        model(images)
    finally:
        for hook in hooks:
            hook.remove()
        _attach_sparse(saved)
        model.train(was_training)
    measured: dict[tuple, Optional[float]] = {}
    thresholds: dict[str, Optional[float]] = {}
    for name, conv in layers.items():
        if name not in shapes:
            continue
        weight = conv.weight.detach()
        key = (shapes[name], tuple(weight.shape), conv.dilation[0], weight.dtype, weight.device)
        if key not in measured:
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
            measured[key], _ = measure_crossover(shapes[name], weight, bias, conv.dilation[0], densities, repeats)
        thresholds[name] = measured[key]
    return thresholds


def _detach_sparse(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    saved = []
    for module in model.modules():
        for attr in ("sparse_conv2", "sparse_branches"):
            if isinstance(getattr(module, attr, None), nn.Module):
                saved.append((module, attr, getattr(module, attr)))
                setattr(module, attr, None)
    return saved


def _attach_sparse(saved: list[tuple[nn.Module, str, nn.Module]]) -> None:
    for module, attr, value in saved:
        setattr(module, attr, value)


def to_perforated(model: nn.Module, threshold: Threshold = None) -> list[str]:
    """Switch `model` to perforated inference in place (eval mode only); returns layer names.

    The model's 4-D parameters and buffers become channels-last, so its activations are
    channels-last too (what the CPU kernel gathers from without a copy).

    Args:
        model: any module containing PAGBottleneck / MultiPool ("pag" variant) modules.
        threshold: None (always perforated), one density for every layer, or
            {layer name: density or None} as returned by `calibrate_thresholds` (missing: never
            dense).
    """
    model.to(memory_format=torch.channels_last)
    names = []
    for name, module in model.named_modules():
        if isinstance(module, PAGBottleneck):
            if not isinstance(module.act2, nn.ReLU) or not isinstance(module.bn2, nn.BatchNorm2d):
                raise ValueError(f"{name}: perforated inference fuses BatchNorm2d + ReLU, got "
                                 f"{type(module.bn2).__name__} + {type(module.act2).__name__}")
            layer = f"{name}.conv2"
            # overwrite_input: PAGBottleneck._gated_conv2 does not use X after this call.
            module.sparse_conv2 = PerforatedConvBNReLU(
                module.conv2, module.bn2, _threshold(threshold, layer), name=layer, overwrite_input=True
            ).to(module.conv2.weight.device)
            names.append(layer)
        elif isinstance(module, MultiPool) and module.variant == "pag":
            branches = {
                i: _threshold(threshold, f"{name}.branches.{i}") for i in range(len(module.branches))
            }
            module.sparse_branches = PerforatedMultiPool(module, branches, name=name).to(
                module.selector.weight.device
            )
            names.extend(f"{name}.branches.{i}" for i, d in enumerate(module.dilations) if d != 0)
    return names


def from_perforated(model: nn.Module) -> int:
    """Undo `to_perforated` in place; returns how many modules were switched back."""
    count = 0
    for module in model.modules():
        if isinstance(module, PAGBottleneck) and module.sparse_conv2 is not None:
            module.sparse_conv2 = None
            count += 1
        elif isinstance(module, MultiPool) and module.sparse_branches is not None:
            module.sparse_branches = None
            count += 1
    return count
