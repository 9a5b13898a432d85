"""`pag::perforated_conv2d`: the perforated convolution as a torch.library custom op.

    pag::perforated_conv2d(Tensor input, Tensor weight, Tensor mask, Tensor? bias,
                           SymInt dilation, Tensor? fill, bool relu, Tensor? weight_rows) -> Tensor

Registered so that torch.compile, torch.export and FakeTensor tracing see one opaque op with
a known output (its fake kernel) instead of tracing into the data-dependent gather:
    CPU and CUDA kernels: `perforated.forward`, which runs the chosen backend (backends.py).
    fake kernel: an empty (B, Co, H, W) tensor in input's dtype, device and memory format.
    autograd: the reference backward of `perforated.py`, i.e. the gradient of the pure-PyTorch
        reference graph, recomputed from the saved inputs (weight_rows gets no gradient: it
        is a detached copy of weight).
Arguments are checked by the public `perforated_conv2d` before it calls the op; the op
itself trusts them. Importing this module defines the op (as torchvision defines its ops);
it builds and imports no kernel.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from pag_model.ops.perforated import _memory_format, forward
from pag_model.ops.reference import perforated_conv2d_reference

NAME = "pag::perforated_conv2d"


@torch.library.custom_op(NAME, mutates_args=(), device_types=("cpu", "cuda"))
def perforated_conv2d_op(
    input: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: Optional[torch.Tensor],
    dilation: int,
    fill: Optional[torch.Tensor],
    relu: bool,
    weight_rows: Optional[torch.Tensor],
) -> torch.Tensor:
    """(B, C, H, W) input, (Co, C, k, k) weight, (B, H, W) mask -> (B, Co, H, W); see perforated.py."""
    return forward(input, weight, mask, bias, dilation, fill, relu, weight_rows)


@perforated_conv2d_op.register_fake
def _fake(input, weight, mask, bias, dilation, fill, relu, weight_rows):  # type: ignore[no-untyped-def]
    batch, _, height, width = input.shape
    return torch.empty(
        (batch, weight.shape[0], height, width),
        dtype=input.dtype,
        device=input.device,
        memory_format=_memory_format(input),
    )


def _setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    input, weight, mask, bias, dilation, fill, relu, _ = inputs
    ctx.save_for_backward(input, weight, mask, bias, fill)
    ctx.dilation = dilation
    ctx.relu = relu


def _backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
    """Gradients of the reference graph for (input, weight, bias, fill); None for the rest."""
    input, weight, mask, bias, fill = ctx.saved_tensors
    needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[3], ctx.needs_input_grad[5])
    leaves = [
        None if t is None else t.detach().requires_grad_(need)
        for t, need in zip((input, weight, bias, fill), needs)
    ]
    wanted = [t for t in leaves if t is not None and t.requires_grad]
    grads: list[Optional[torch.Tensor]] = [None] * 4
    if wanted:
        with torch.enable_grad():
            out = perforated_conv2d_reference(
                leaves[0], leaves[1], mask, leaves[2], ctx.dilation, leaves[3], ctx.relu
            )
        computed = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=True))
        grads = [next(computed) if t is not None and t.requires_grad else None for t in leaves]
    grad_input, grad_weight, grad_bias, grad_fill = grads
    return grad_input, grad_weight, None, grad_bias, None, grad_fill, None, None


perforated_conv2d_op.register_autograd(_backward, setup_context=_setup_context)
