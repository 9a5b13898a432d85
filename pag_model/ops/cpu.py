"""CPU inference path of the perforated convolution: packed weights, in-place output.

`PackedConv` holds one layer's fixed weight ready for the compiled CPU kernel: the tap-major
matrix (`tap_major`) and, per dtype, the weight reordered once for oneDNN's matmul (the
fastest GEMM engine measured on this project's CPU; benchmarks/RESULTS.md). `run_into_`
writes the layer's conv + bias (+ ReLU) at the active pixels of `mask` into `out` in place
and leaves every other pixel of `out` as it is: no zero fill, no fill copy, no layout copy
for channels-last inputs. `out` may be the input itself (the PAG block, whose output at
inactive pixels is X): the kernel then stores results only after all of them are computed.

Inference only (no autograd): callers check `usable(x)` first and otherwise use the functional
`perforated_conv2d`, which supports gradients. The packed weight is a snapshot of the weight
given at construction, as the folded weights of `pag_model.sparse` are.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from pag_model.ops import backends
from pag_model.ops.perforated import TILE_ENV, tap_major
from pag_model.ops.reference import active_indices

# Set to "mm" to use at::mm on tap-major tiles instead of oneDNN's packed matmul (benchmarks).
ENGINE_ENV = "PAG_PERFORATED_CPU_ENGINE"
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
_PACKABLE = (torch.float32, torch.bfloat16)  # dtypes oneDNN's matmul runs fast here


def _onednn_packs() -> bool:
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and os.environ.get(ENGINE_ENV, "onednn").strip().lower() != "mm"
    )


def usable(x: torch.Tensor) -> bool:
    """True when `PackedConv.run_into_` can take `x`: a CPU tensor in a kernel dtype, no
    autograd recording, not being traced by torch.compile, and the cpp backend chosen (not
    forced off by PAG_PERFORATED_BACKEND, extension built)."""
    if x.device.type != "cpu" or x.dtype not in DTYPES or x.dim() != 4:
        return False
    if torch.is_grad_enabled() and x.requires_grad:
        return False
    if torch.compiler.is_compiling():
        return False
    return backends.choose_backend(x) == "cpp"


class PackedConv:
    """One k x k conv layer's weight, packed for the CPU kernel per input dtype.

    Args:
        weight: (Co, C, k, k), k odd.
        bias: (Co,) or None.
        dilation: the conv's dilation (stride 1, 'same' padding).
    """

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], dilation: int) -> None:
        self.out_channels, self.in_channels, self.k, _ = weight.shape
        self.dilation = dilation
        self.rows = tap_major(weight)  # (Co, k*k*C), the weight's dtype
        self.bias = None if bias is None else bias.detach().contiguous()
        self._by_dtype: dict[torch.dtype, tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]] = {}

    def for_dtype(self, dtype: torch.dtype) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """(tap-major rows, bias, oneDNN-packed weight or None) in `dtype`, made once per dtype."""
        if dtype not in self._by_dtype:
            rows = self.rows.to(dtype).contiguous()
            bias = None if self.bias is None else self.bias.to(dtype)
            packed = None
            if dtype in _PACKABLE and _onednn_packs():
                packed = torch.ops.mkldnn._reorder_linear_weight(rows, 256)
            self._by_dtype[dtype] = (rows, bias, packed)
        return self._by_dtype[dtype]

    def run_into_(self, out: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, relu: bool) -> torch.Tensor:
        """Write act(conv(x) + bias) at pixels where mask is true into `out`, in place.

        Args:
            out: (B, Co, H, W), x's dtype, channels-last or contiguous; may be `x` itself.
            x: (B, C, H, W) on the CPU; a channels-last input is used as it is.
            mask: (B, H, W) bool.
            relu: apply ReLU after the bias.

        Returns:
            out.
        """
        if out is not x and not x.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        if out is x and not x.is_contiguous(memory_format=torch.channels_last):
            raise ValueError(
                f"PackedConv.run_into_: in place needs a channels-last input, got strides {x.stride()}"
            )
        rows, bias, packed = self.for_dtype(x.dtype)
        index = active_indices(mask)
        tile = int(os.environ.get(TILE_ENV, "0"))
        ext = backends.CPP.load()
        if packed is not None:
            ext.perforated_conv2d_packed_(
                out, x, packed, self.out_channels, rows.shape[1], index, bias, self.k, self.dilation, relu, tile
            )
        else:
            ext.perforated_conv2d_(out, x, rows, index, bias, self.k, self.dilation, relu, tile)
        return out
