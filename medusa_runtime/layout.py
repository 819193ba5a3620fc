"""Faster small-batch linears on CPU: MKL's pre-packed GEMM for the few rows a tree verify step feeds.

A verify step runs every linear layer on N tree tokens (N = 2..64 typically). Stock ``nn.Linear`` on
CPU sends those few rows to a generic GEMM that repacks the whole weight on every call, so a 5-token
forward of SmolLM2-135M costs about twice a 1-token one although both stream the same weights.
MKL can pack a weight once (``cblas_sgemm_pack``); ``torch.ops.mkl._mkl_linear`` then multiplies
against the packed copy. Measured on this project's 2-core AVX-512 machine, fp32, all 30 layers of
SmolLM2-135M plus its lm_head, weights streamed from memory (``python scripts/bench_linears.py``):
5 rows 76.9 -> 39.4 ms, 8 rows 87.0 -> 40.6 ms, 16 rows 147.0 -> 65.7 ms; 1 row takes the stock path.

``pack_linears`` swaps every ``nn.Linear`` of a model for a ``PackedLinear`` (a subclass: same weight
Parameter, same state dict, ``isinstance(m, nn.Linear)`` still holds) that takes the packed path for
4..32 rows without autograd, and stock ``F.linear`` otherwise (1-3 rows, where the stock GEMM/GEMV is as
fast: plain decoding and the Hugging Face baseline run exactly as without packing; many rows: prefill
and training). Results equal
``F.linear`` up to float rounding. It costs one extra copy of every linear weight in memory, is CPU
only, and does nothing where PyTorch was built without MKL. The model's own code is untouched: the
modules are driven through their usual ``forward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mkl_packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedLinear(nn.Linear):
    """``nn.Linear`` with an MKL-packed copy of its weight for small row counts (inference only).

    The packed copy follows the weight through ``.to()``/``load_state_dict`` (re-packed on CPU fp32,
    dropped elsewhere); an in-place edit of ``weight.data`` needs an explicit ``repack()``."""

    min_rows, max_rows = 1, 1 << 20  # oneDNN beat the stock GEMM at every row count measured (bench_linears.py)
    _packed: torch.Tensor | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> PackedLinear:
        cls._onednn_linear = torch.ops.mkldnn._linear_pointwise  # resolved once: op lookup costs microseconds per call
        packed = cls.__new__(cls)
        nn.Module.__init__(packed)
        packed.in_features, packed.out_features = linear.in_features, linear.out_features
        packed.weight = linear.weight  # shared, so tied weights stay tied
        packed.bias = linear.bias
        packed.repack()
        return packed

    def repack(self) -> None:
        weight = self.weight
        if weight.device.type == "cpu" and weight.dtype == torch.float32:
            with torch.no_grad():  # [packed bytes / 4, 1]; the batch-size hint does not restrict later calls
                self._packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), 8)  # oneDNN layout
        else:
            self._packed = None

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.repack()
        return out

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.repack()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if self.min_rows <= rows <= self.max_rows and self._packed is not None and not torch.is_grad_enabled():
            return self._onednn_linear(x.contiguous(), self._packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def pack_linears(model: nn.Module) -> int:
    """Replace every fp32 CPU ``nn.Linear`` under ``model`` by a ``PackedLinear``; returns how many."""
    if not mkl_packing_available():
        return 0
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.device.type == "cpu" and child.weight.dtype == torch.float32:
                setattr(parent, name, PackedLinear.from_linear(child))
                swapped += 1
    return swapped
