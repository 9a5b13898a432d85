"""The four task losses (PAG paper, Eqs. 7-10), with ignore labels and validity masks.

Each loss is averaged over the valid pixels of the batch (Eq. 7 is additionally summed over
branches), so its scale does not depend on image size; a batch with no valid pixel gives 0.
Which loss a task uses, and on which batch fields, is in the task table (`pag_model.tasks`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

IGNORE = 255


def boundary_loss(branch_logits: Sequence[torch.Tensor], label: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Eq. 7: class-balanced logistic loss summed over branches b.

    beta_+ = |Y-| / |Y| weighs boundary pixels and beta_- = 1 - beta_+ the others, per image,
    over non-ignored pixels Y. Each branch: sum_j beta_{y_j} * -log P(y_j) / |Y|; branches are
    summed, images averaged.

    Args:
        branch_logits: (B, 1, H, W) logits per branch (sides and fusion).
        label: (B, H, W) with 0 (non-boundary), 1 (boundary), ignore_index.
    """
    valid = label != ignore_index
    pos = (label == 1) & valid
    n_valid = valid.flatten(1).sum(1).clamp_min(1).float()
    beta_pos = (valid & ~pos).flatten(1).sum(1).float() / n_valid  # |Y-| / |Y|
    weight = torch.where(pos, beta_pos[:, None, None], 1.0 - beta_pos[:, None, None]) * valid
    target = pos.float()
    total = label.new_zeros((), dtype=torch.float32)
    for logits in branch_logits:
        bce = F.binary_cross_entropy_with_logits(logits[:, 0].float(), target, reduction="none")
        total = total + ((weight * bce).flatten(1).sum(1) / n_valid).mean()
    return total


def semantic_loss(logits: torch.Tensor, label: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Eq. 8: cross-entropy over non-ignored pixels. logits (B, K, H, W), label (B, H, W) int."""
    valid = label != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), label.long(), ignore_index=ignore_index)


def depth_loss(log_depth: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Eq. 9: (D - D^)^2 + gamma |D - D^| on log depth, mean over valid pixels.

    Args:
        log_depth: (B, 1, H, W) or (B, H, W) predicted log depth D.
        depth: (B, H, W) ground-truth depth in metres (> 0 where valid).
        valid: (B, H, W) bool.
    """
    pred = log_depth.reshape(depth.shape).float()
    valid = valid & (depth > 0)
    if not valid.any():
        return pred.sum() * 0.0
    diff = pred[valid] - torch.log(depth[valid].float())
    return (diff.pow(2) + gamma * diff.abs()).mean()


class _SafeAcos(torch.autograd.Function):
    """acos with the derivative -1/sqrt(max(1 - x^2, eps)): finite at x = +-1."""

    EPS = 1e-6

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clamp(-1.0, 1.0)
        ctx.save_for_backward(x)
        return torch.acos(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return -grad / torch.sqrt((1.0 - x * x).clamp_min(_SafeAcos.EPS))


def safe_acos(x: torch.Tensor) -> torch.Tensor:
    return _SafeAcos.apply(x)


def normal_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, lam: float = 4.0) -> torch.Tensor:
    """Eq. 10: -n.n^ + lambda * acos(n.n^), mean over valid pixels. pred, target (B, 3, H, W) unit."""
    if not valid.any():
        return pred.sum() * 0.0
    dot = (pred.float() * target.float()).sum(dim=1)[valid]
    return (-dot + lam * safe_acos(dot)).mean()
