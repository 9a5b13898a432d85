"""PAGNet: timm ResNet at output stride 8 -> optional MultiPool -> deconvolution heads.

The network of the PAG paper (Sec. 4): a ResNet whose stride-1 bottlenecks in the chosen
macro blocks carry pixel-wise gates, a MultiPool module after one macro block (Res3..Res5, or
"Res6" = an extra conv layer above the backbone), and one head per task producing outputs at
input resolution. Several task heads may share one backbone.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .backbone import build_backbone
from .blocks import MACRO_BLOCKS, PAGBottleneck, convert_to_pag, pag_blocks
from .gating import GumbelGate
from .heads import HeadShape, conv_bn_relu
from .multipool import DEFAULT_DILATIONS, MultiPool
from .norm import freeze_batchnorm
from .tasks import TASKS, check_tasks

MULTIPOOL_PLACES = ("res3", "res4", "res5", "res6")


class PAGNet(nn.Module):
    """Dense prediction network with pixel-wise attentional gating.

    forward(images (B, 3, H, W), H and W divisible by the output stride) returns a dict with,
    per task: "semantic" (B, K, H, W) logits; "depth" (B, 1, H, W) log depth; "normals"
    (B, 3, H, W) unit vectors; "boundary" (B, 1, H, W) fused logits and "boundary_sides", a list
    of (B, 1, H, W) side logits (Res2..Res5 and the top head). Heads come from the task table
    (`pag_model.tasks.TASKS`). Images of any size: `pag_model.evaluation.predict_full_size`.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        tasks: Sequence[str] = ("semantic",),
        num_classes: int = 40,
        multipool: Optional[str] = "res5",
        multipool_variant: str = "pag",
        dilations: Sequence[int] = DEFAULT_DILATIONS,
        gated: Sequence[str] = (),
        pretrained: Optional[str] = None,
        head_channels: int = 64,
        head_upsample: str = "deconv",
        init_open_prob: float = 0.95,
        gate_granularity: str = "pixel",
        frozen_bn: bool = True,
        output_stride: int = 8,
    ) -> None:
        """
        Args:
            backbone: a name from pag_model.backbone.BACKBONES ("resnet50", ..., "resnet_tiny").
            tasks: one or more names from pag_model.tasks.TASKS ("boundary", "semantic", "depth", "normals").
            num_classes: K for the semantic task.
            multipool: where MultiPool goes ("res3", "res4", "res5", "res6") or None.
            multipool_variant: "pag" (one branch per pixel) or "wavg" (softmax-weighted).
            dilations: MultiPool's dilation rates (0 = copy).
            gated: macro blocks whose stride-1 bottlenecks get gates ("res2".."res5").
            pretrained: None, "timm" or a local weights path for the backbone.
            head_channels: width of the task heads.
            head_upsample: "deconv" (the paper's heads: deconvolution to input resolution, then
                convolutions) or "bilinear" (convolutions at the output stride, bilinear
                upsampling of the prediction; `pag_model.heads.DenseHead`).
            init_open_prob: initial probability of a gate computing a pixel.
            gate_granularity: "pixel" (PAG), "image" (layer skipping) or "static" (a learned
                input-independent mask): see `pag_model.gating.GumbelGate`.
            frozen_bn: freeze BatchNorm statistics (the paper's setting; batch size 1 works).
            output_stride: 8 (the paper), 16 or 32.
        """
        super().__init__()
        tasks = check_tasks(tasks)
        out_channels = {task: TASKS[task].channels(num_classes) for task in tasks}
        if multipool is not None and multipool not in MULTIPOOL_PLACES:
            raise ValueError(f"unknown MultiPool place {multipool!r}; allowed: {', '.join(MULTIPOOL_PLACES)} or None")
        for macro in gated:
            if macro not in MACRO_BLOCKS:
                raise ValueError(f"unknown gated block {macro!r}; allowed: {', '.join(MACRO_BLOCKS)}")
        self.tasks = tasks
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.gated = tuple(gated)
        self.backbone = build_backbone(backbone, pretrained, output_stride)
        channels = {m: info["num_chs"] for m, info in zip(MACRO_BLOCKS, self.backbone.feature_info[1:])}
        strides = {"res2": 4, "res3": 8, "res4": min(16, output_stride), "res5": min(32, output_stride)}
        convert_to_pag(self.backbone, self.gated, init_open_prob, gate_granularity)
        self.after = nn.ModuleDict(
            {m: MultiPool(channels[m], dilations, multipool_variant) if multipool == m else nn.Identity() for m in MACRO_BLOCKS}
        )
        top = channels["res5"]
        self.res6 = nn.Identity()
        if multipool == "res6":
            self.res6 = nn.Sequential(conv_bn_relu(top, top, 3, nn.BatchNorm2d), MultiPool(top, dilations, multipool_variant))
        shape = HeadShape(
            side_channels=tuple(channels[m] for m in MACRO_BLOCKS),
            side_strides=tuple(strides[m] for m in MACRO_BLOCKS),
            top_channels=top,
            width=head_channels,
            stride=output_stride,
            upsample=head_upsample,
        )
        self.heads = nn.ModuleDict({task: TASKS[task].head(shape, out_channels[task]) for task in tasks})
        if frozen_bn:
            freeze_batchnorm(self)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> dict of task outputs at (H, W)."""
        self.check_input(images)
        features = self.features(images)
        outputs: dict[str, torch.Tensor] = {}
        for head in self.heads.values():
            outputs.update(head(features))
        return outputs

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature maps {"res2".."res5", "top"}; MultiPool applied where configured."""
        b = self.backbone
        x = b.maxpool(b.act1(b.bn1(b.conv1(images))))
        features = {}
        for macro, layer in MACRO_BLOCKS.items():
            x = self.after[macro](getattr(b, layer)(x))
            features[macro] = x
        features["top"] = self.res6(x)
        return features

    def check_input(self, images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"PAGNet expects images (B, 3, H, W), got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h % self.output_stride or w % self.output_stride:
            raise ValueError(
                f"input size {h}x{w} is not divisible by the output stride {self.output_stride}; "
                f"crop or pad to a multiple of {self.output_stride}"
            )

    def gates(self) -> list[tuple[str, GumbelGate]]:
        """(name, gate) of every pixel-wise gate, in module order."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, GumbelGate)]

    def gated_blocks(self) -> list[tuple[str, PAGBottleneck]]:
        return pag_blocks(self)

    def multipools(self) -> list[MultiPool]:
        return [m for m in self.modules() if isinstance(m, MultiPool)]

    def set_tau(self, tau: float) -> None:
        """Set the Gumbel temperature of every gate and MultiPool selector."""
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        for _, gate in self.gates():
            gate.tau = tau
        for mp in self.multipools():
            mp.tau = tau

    def set_gate_mode(self, mode: str, blocks: Optional[Sequence[str]] = None, fixed_mask: Optional[torch.Tensor] = None) -> None:
        """Set the mode of the gates in macro blocks `blocks` (all gated blocks if None)."""
        layers = None if blocks is None else {MACRO_BLOCKS[m] if m in MACRO_BLOCKS else m for m in blocks}
        for name, gate in self.gates():
            if layers is None or name.split(".")[1] in layers:
                gate.set_mode(mode, fixed_mask)

    def load_stage_state(self, state_dict: dict[str, torch.Tensor]) -> list[str]:
        """Load a previous stage's weights; only modules this stage adds (gates, MultiPool) may be missing.

        Returns the names of the parameters left at their initial values.
        """
        own = self.state_dict()
        mismatched = [
            f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state_dict.items() if k in own and own[k].shape != v.shape
        ]
        if mismatched:
            raise ValueError(f"checkpoint does not fit this model: shapes differ for {mismatched[:5]}")
        result = self.load_state_dict(state_dict, strict=False)
        new = [k for k in result.missing_keys if ".gate." in k or k.startswith(("after.", "res6."))]
        # A stage that changes the gates' kind (e.g. a baseline from a PAG checkpoint) starts
        # its gates afresh: the previous stage's gate parameters are not this model's.
        unexpected = [k for k in result.unexpected_keys if ".gate." not in k]
        bad = sorted(set(result.missing_keys) - set(new))
        if bad or unexpected:
            raise ValueError(
                f"checkpoint does not fit this model: missing {bad[:5]}, unexpected {unexpected[:5]} "
                "(only gates and MultiPool may be new in a later stage)"
            )
        return new
