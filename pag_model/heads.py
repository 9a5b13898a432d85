"""Task heads (PAG paper, Sec. 4): a deconvolution back to input resolution, then convolutions.

Rather than upsampling 1/8-resolution predictions, the paper applies "a deconvolution layer
followed by two or more convolutional layers before the final output". The boundary task
follows HED: side outputs at Res2..Res5 plus a fusion output, each a logit map.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn


HeadOutputs = dict[str, Union[torch.Tensor, list[torch.Tensor]]]
UPSAMPLING = ("deconv", "bilinear")


@dataclass(frozen=True)
class HeadShape:
    """What a task head needs to know about the features it reads.

    Args:
        side_channels: channels of the Res2..Res5 feature maps.
        side_strides: their strides (4, 8, 8, 8 at output stride 8).
        top_channels: channels of features["top"] (after MultiPool / Res6).
        width: the heads' inner width.
        stride: the stride of features["top"] (the upsampling factor back to the input).
        upsample: "deconv" (the paper: deconvolve to input resolution, then convolutions there)
            or "bilinear" (convolutions at the feature stride, bilinear upsampling of the
            prediction at the end: the head costs 1/stride^2 as much, so the backbone's
            gated convs dominate the multiply-adds of a small network).
    """

    side_channels: tuple[int, ...]
    side_strides: tuple[int, ...]
    top_channels: int
    width: int
    stride: int
    upsample: str = "deconv"


def bilinear_kernel(channels: int, factor: int) -> torch.Tensor:
    """(C, 1, 2f, 2f) bilinear upsampling kernel for a depthwise ConvTranspose2d (FCN init)."""
    size = 2 * factor
    center = (size - 1) / 2.0
    ramp = 1.0 - (torch.arange(size, dtype=torch.float32) - center).abs() / factor
    return (ramp[:, None] * ramp[None, :]).expand(channels, 1, size, size).clone()


def upsample_deconv(channels: int, factor: int) -> nn.ConvTranspose2d:
    """Depthwise transposed conv that upsamples exactly `factor` times, initialised bilinear."""
    deconv = nn.ConvTranspose2d(
        channels, channels, kernel_size=2 * factor, stride=factor, padding=factor // 2, groups=channels, bias=False
    )
    with torch.no_grad():
        deconv.weight.copy_(bilinear_kernel(channels, factor))
    return deconv


def conv_bn_relu(cin: int, cout: int, k: int, norm_layer: type[nn.Module]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), norm_layer(cout), nn.ReLU(inplace=True))


class DenseHead(nn.Module):
    """(B, C_in, H/s, W/s) -> (B, C_out, H, W): reduce, deconvolve by s, two 3x3 convs, predict
    (upsample="deconv"); or reduce, two 3x3 convs and predict at H/s, then bilinear upsampling
    by s (upsample="bilinear").

    As a task head, forward(features) reads features["top"] and returns {key: prediction};
    `decode(x)` is the same on a tensor (BoundaryHead's top branch uses it).
    """

    def __init__(
        self,
        key: str,
        in_channels: int,
        out_channels: int,
        mid_channels: int = 64,
        stride: int = 8,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        upsample: str = "deconv",
    ) -> None:
        """
        Args:
            key: the name of the output in the network's output dict (the task name).
            in_channels: channels of the top feature map.
            out_channels: prediction channels (K classes, 1 depth, 3 normals, 1 boundary).
            mid_channels: width of the head.
            stride: the feature map's stride (the upsampling factor).
            norm_layer: normalisation class.
            upsample: "deconv" or "bilinear" (see the class docstring).
        """
        super().__init__()
        if upsample not in UPSAMPLING:
            raise ValueError(f"head upsampling {upsample!r}: expected one of {', '.join(UPSAMPLING)}")
        self.key = key
        self.stride = stride
        self.bilinear = upsample == "bilinear"
        self.reduce = conv_bn_relu(in_channels, mid_channels, 1, norm_layer)
        self.deconv = nn.Identity() if self.bilinear else upsample_deconv(mid_channels, stride)
        self.conv1 = conv_bn_relu(mid_channels, mid_channels, 3, norm_layer)
        self.conv2 = conv_bn_relu(mid_channels, mid_channels, 3, norm_layer)
        self.predict = nn.Conv2d(mid_channels, out_channels, 3, padding=1)

    def forward(self, features: dict[str, torch.Tensor]) -> HeadOutputs:
        """{key: (B, C_out, H, W)} from features["top"] (B, C_in, H/s, W/s)."""
        return {self.key: self.decode(features["top"])}

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H/s, W/s) -> (B, C_out, H, W)."""
        x = self.reduce(x)
        x = self.deconv(x)
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.predict(x)
        if self.bilinear:
            x = F.interpolate(x, scale_factor=self.stride, mode="bilinear", align_corners=False)
        return x


class NormalsHead(DenseHead):
    """DenseHead with 3 outputs and a final L2 normalisation (unit normals)."""

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(super().decode(x), dim=1, eps=1e-6)


class BoundaryHead(nn.Module):
    """HED-style boundary head: side logits at Res2..Res5, a deconv head on the top, and a fusion.

    forward(features) takes {"res2": (B, C2, H/4, W/4), "res3".."res5": (B, Ci, H/8, W/8), "top": ...}
    and returns {key: fused logits (B, 1, H, W), key + "_sides": [side logits (B, 1, H, W)] for
    res2..res5 and the top head}.
    """

    def __init__(
        self,
        key: str,
        side_channels: Sequence[int],
        side_strides: Sequence[int],
        top_channels: int,
        mid_channels: int = 64,
        stride: int = 8,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        upsample: str = "deconv",
    ) -> None:
        """
        Args:
            key: the fused output's name in the network's output dict (the task name).
            side_channels: channels of Res2..Res5 features.
            side_strides: their strides (4, 8, 8, 8 at output stride 8).
            top_channels: channels of the top feature map (after MultiPool).
            mid_channels: width of the top head.
            stride: stride of the top feature map.
            norm_layer: normalisation class.
            upsample: the top head's upsampling, "deconv" or "bilinear".
        """
        super().__init__()
        self.key = key
        self.sides = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in side_channels)
        self.side_up = nn.ModuleList(upsample_deconv(1, s) for s in side_strides)
        self.top = DenseHead(key, top_channels, 1, mid_channels, stride, norm_layer, upsample)
        self.fuse = nn.Conv2d(len(side_channels) + 1, 1, 1)
        with torch.no_grad():
            self.fuse.weight.fill_(1.0 / (len(side_channels) + 1))
            self.fuse.bias.zero_()

    def forward(self, features: dict[str, torch.Tensor]) -> HeadOutputs:
        side_feats = [features[k] for k in ("res2", "res3", "res4", "res5")]
        sides = [up(conv(f)) for conv, up, f in zip(self.sides, self.side_up, side_feats)]
        sides.append(self.top.decode(features["top"]))
        fused = self.fuse(torch.cat(sides, dim=1))
        return {self.key: fused, f"{self.key}_sides": sides}
