"""timm ResNet backbones at output stride 8 (PAG paper, Sec. 4).

The top pooling layers are replaced by atrous convolution: Res4 dilated by 2 and Res5 by 4,
so features come out at 1/8 of the input resolution. The backbone is the timm model itself
(not `features_only`), so gates can wrap its blocks in place.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import timm
import torch
from timm.models.resnet import Bottleneck, ResNet
from torch import nn


def _tiny(output_stride: int) -> ResNet:
    """A small bottleneck ResNet (2 blocks per stage, 1/4 width) for tests and the CPU demo."""
    return ResNet(
        block=Bottleneck,
        layers=(2, 2, 2, 2),
        channels=(16, 32, 64, 128),
        output_stride=output_stride,
        num_classes=0,
        global_pool="",
    )


def _demo(output_stride: int) -> ResNet:
    """The demo's network: a small bottleneck ResNet whose gated 3x3 convs dominate its cost.

    Bottleneck width = block width (base_width 256), layers (1, 2, 4, 4), channels
    (4, 16, 16, 16) -> blocks of 16, 64, 64, 64 channels, a deep 3x3 stem of width 8. Res3-Res5
    have equal widths, so at output stride 8 every block of Res4-Res5 and all but the first
    of Res3 keep identity shortcuts: 9 gateable blocks whose 3x3 convs are 63-66% of the
    multiply-adds with a stride-8 (bilinear) head of width 16-32, so the gates decide most of
    the cost, as in a ResNet-50 at paper scale.
    """
    return ResNet(
        block=Bottleneck,
        layers=(1, 2, 4, 4),
        channels=(4, 16, 16, 16),
        base_width=256,
        stem_type="deep",
        stem_width=8,
        output_stride=output_stride,
        num_classes=0,
        global_pool="",
    )


def _timm(name: str):
    def build(output_stride: int) -> ResNet:
        return timm.create_model(name, pretrained=False, output_stride=output_stride, num_classes=0, global_pool="")

    return build


BACKBONES = {
    "resnet50": _timm("resnet50"),
    "resnet101": _timm("resnet101"),
    "resnet26": _timm("resnet26"),
    "resnet_tiny": _tiny,
    "resnet_demo": _demo,
}
LOCAL_ONLY = ("resnet_tiny", "resnet_demo")  # no published weights; timm does not know them by name


def build_backbone(
    name: str = "resnet50",
    pretrained: Optional[str] = None,
    output_stride: int = 8,
) -> ResNet:
    """A timm ResNet without classifier, at the given output stride.

    Args:
        name: one of BACKBONES.
        pretrained: None (random init), "timm" (ImageNet weights through timm; needs a network),
            or a path to a weights file (.safetensors, .pth/.pt/.bin state dict).
        output_stride: 8 (the paper), 16 or 32.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; allowed: {', '.join(BACKBONES)}")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    if pretrained == "timm":
        if name in LOCAL_ONLY:
            raise ValueError(f"backbone {name!r} has no published pretrained weights; use pretrained=None")
        try:
            return timm.create_model(name, pretrained=True, output_stride=output_stride, num_classes=0, global_pool="")
        except Exception as err:  # network errors come in many types
            raise RuntimeError(
                f"could not download pretrained {name} weights through timm ({err}); "
                "on machines without a network pass pretrained=<path to a weights file>"
            ) from err
    if pretrained is not None and name not in LOCAL_ONLY:
        return _timm_local(name, Path(pretrained), output_stride)
    model = BACKBONES[name](output_stride)
    if pretrained is not None:
        load_weights(model, pretrained)
    return model


def _timm_local(name: str, path: Path, output_stride: int) -> ResNet:
    """A timm network with ImageNet weights from a local file, through timm's own loader
    (`pretrained_cfg_overlay=dict(file=...)`: safetensors or a weights-only torch file; the
    classifier is dropped as for downloaded weights, every other key must fit: timm loads
    non-strictly once the classifier is removed, so the keys are checked here)."""
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    from timm.models import load_state_dict

    try:
        model = timm.create_model(
            name,
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(path)),
            output_stride=output_stride,
            num_classes=0,
            global_pool="",
        )
    except (RuntimeError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: weights do not fit the {name} backbone ({err})") from err
    have = {k for k in load_state_dict(str(path)) if not k.startswith("fc.")}
    want = set(model.state_dict())
    if have != want:
        missing, unexpected = sorted(want - have), sorted(have - want)
        raise ValueError(
            f"{path}: weights do not fit the {name} backbone; missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load weights from a local file into `model` (`resnet_tiny`, `resnet_demo`, which timm
    does not know by name), ignoring the classifier (fc.*)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith(("fc.", "module.fc."))}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path}: weights do not fit the backbone; missing {result.missing_keys[:5]}"
            f"{'...' if len(result.missing_keys) > 5 else ''}, unexpected {result.unexpected_keys[:5]}"
            f"{'...' if len(result.unexpected_keys) > 5 else ''}"
        )
