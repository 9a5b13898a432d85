"""The PAG bottleneck (PAG paper, Eq. 2), `convert_to_pag`, the paper's plug-in, and its inverse.

A ResNet bottleneck computes X = F1(I), Y = F2(X), Z = F3(Y), O = act(I + Z). With PAG the
gate G = G(I) is computed from the block input in parallel with F1, and only the costly 3x3
transform F2 is gated: Z = F3(Gbar * X + G * Y). Where G = 0 the pixel skips F2 and X flows
straight into conv3. F1 and F3 (1x1 convolutions) run everywhere, as in the authors' code.
Gates go into stride-1 bottlenecks with identity shortcuts, reusing their trained weights;
`remove_gates` turns them back into plain timm bottlenecks (the dense network, no gate cost).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from timm.models.resnet import Bottleneck
from torch import nn

from .gating import GumbelGate

# Macro blocks of a timm ResNet, named as in the paper.
MACRO_BLOCKS = {"res2": "layer1", "res3": "layer2", "res4": "layer3", "res5": "layer4"}


class PAGBottleneck(nn.Module):
    """A timm Bottleneck with a pixel-wise gate on its 3x3 conv. Same parameters, plus `gate`.

    Attribute `sparse_conv2`: when set (see `pag_model.sparse.to_perforated`) and in eval
    mode, it computes Gbar*X + G*Y at active pixels only, from X (B, C, H, W) and the mask
    (B, H, W) bool.
    """

    def __init__(
        self,
        block: Bottleneck,
        init_open_prob: float = 0.95,
        granularity: str = "pixel",
    ) -> None:
        """
        Args:
            block: a stride-1 timm Bottleneck without downsample (identity shortcut).
            init_open_prob: the gate's initial probability of computing a pixel.
            granularity: what one gate decision covers ("pixel" = PAG; see GumbelGate).
        """
        super().__init__()
        if not is_gateable(block):
            raise ValueError(
                "PAGBottleneck needs a stride-1 timm Bottleneck with an identity shortcut and no "
                f"anti-aliasing; got stride={getattr(block, 'stride', None)}, "
                f"downsample={type(block.downsample).__name__ if block.downsample is not None else None}"
            )
        for name in ("conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "conv3", "bn3", "act3"):
            setattr(self, name, getattr(block, name))
        self.se = block.se
        self.drop_path = block.drop_path
        self.gate = GumbelGate(block.conv1.in_channels, init_open_prob=init_open_prob, granularity=granularity)
        self.sparse_conv2: Optional[nn.Module] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        g = self.gate(x)
        h = self.act1(self.bn1(self.conv1(x)))
        mixed = self._gated_conv2(h, g)
        z = self.bn3(self.conv3(mixed))
        if self.se is not None:
            z = self.se(z)
        if self.drop_path is not None:
            z = self.drop_path(z)
        return self.act3(z + x)

    def _gated_conv2(self, h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Gbar * X + G * F2(X), with X = h (B, C, H, W) and G = g (B, 1, H, W)."""
        if self.sparse_conv2 is not None and not self.training:
            return self.sparse_conv2(h, g[:, 0] > 0.5)
        y = self.act2(self.drop_block(self.bn2(self.conv2(h))))
        return (1.0 - g) * h + g * y


def is_gateable(block: nn.Module) -> bool:
    """True for a stride-1 timm Bottleneck with identity shortcut and no anti-aliasing."""
    return (
        isinstance(block, Bottleneck)
        and block.downsample is None
        and block.conv2.stride == (1, 1)
        and isinstance(block.aa, nn.Identity)
    )


def convert_to_pag(
    model: nn.Module,
    blocks: Sequence[str] = ("res3", "res4", "res5"),
    init_open_prob: float = 0.95,
    granularity: str = "pixel",
) -> list[str]:
    """Wrap, in place, the gateable bottlenecks of the named macro blocks of a timm ResNet.

    Args:
        model: a timm ResNet (attributes layer1..layer4).
        blocks: macro blocks to gate, from "res2", "res3", "res4", "res5".
        init_open_prob: initial gate probability of computing a pixel.
        granularity: what one gate decision covers ("pixel" = PAG; see GumbelGate).

    Returns:
        Qualified names of the wrapped blocks, e.g. ["layer3.1", "layer3.2", ...].
    """
    wrapped = []
    for macro in blocks:
        if macro not in MACRO_BLOCKS:
            raise ValueError(f"unknown macro block {macro!r}; allowed: {', '.join(MACRO_BLOCKS)}")
        layer = getattr(model, MACRO_BLOCKS[macro], None)
        if not isinstance(layer, nn.Sequential):
            raise ValueError(f"model has no {MACRO_BLOCKS[macro]} stage to gate for {macro!r}")
        for i, block in enumerate(layer):
            if is_gateable(block):
                layer[i] = PAGBottleneck(block, init_open_prob=init_open_prob, granularity=granularity)
                wrapped.append(f"{MACRO_BLOCKS[macro]}.{i}")
    return wrapped


def pag_blocks(model: nn.Module) -> list[tuple[str, PAGBottleneck]]:
    """(qualified name, block) for every PAGBottleneck in `model`, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PAGBottleneck)]


def remove_gates(model: nn.Module) -> list[str]:
    """Undo `convert_to_pag` in place: every PAGBottleneck becomes a plain timm Bottleneck.

    The Bottleneck holds the PAG block's own layers (same weights), computes its 3x3 conv at
    every pixel and has no gate: the network a user deploys without PAG. Any perforated
    module (`sparse_conv2`) goes with the gate.

    Returns:
        Qualified names of the replaced blocks.
    """
    replaced = []
    for name, block in pag_blocks(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, ungated(block))
        replaced.append(name)
    return replaced


def ungated(block: PAGBottleneck) -> Bottleneck:
    """A timm Bottleneck (stride 1, identity shortcut) made of `block`'s layers, gate left out."""
    # Built on the meta device (nothing allocated); every layer is then replaced by block's own.
    plain = Bottleneck(block.conv1.in_channels, block.conv3.out_channels // Bottleneck.expansion, device="meta")
    for name in ("conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "conv3", "bn3", "act3"):
        setattr(plain, name, getattr(block, name))
    plain.aa = nn.Identity()  # gateable blocks have none (`is_gateable`)
    plain.se = block.se
    plain.drop_path = block.drop_path
    plain.downsample = None
    plain.dilation = block.conv2.dilation[0]
    plain.train(block.training)
    return plain
