"""Frozen BatchNorm (PAG paper, Sec. 4): constant global moments in training and testing.

Statistics are never updated, so training works with a batch of one image. The affine scale
and shift stay trainable. It subclasses BatchNorm2d so state dicts and BN folding are unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that always normalises with its running statistics and never updates them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def freeze_batchnorm(model: nn.Module) -> int:
    """Replace every BatchNorm2d in `model` by a FrozenBatchNorm2d in place; return how many."""
    count = 0
    for name, child in list(model.named_children()):
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, FrozenBatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps, affine=child.affine)
            frozen.load_state_dict(child.state_dict())
            frozen.to(device=child.running_mean.device if child.running_mean is not None else None)
            setattr(model, name, frozen)
            count += 1
        else:
            count += freeze_batchnorm(child)
    return count
