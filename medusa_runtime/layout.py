"""Faster linears on CPU: oneDNN's pre-packed fp32 GEMM, for the few rows decoding and tree verify feed.

Stock ``nn.Linear`` on CPU calls a generic BLAS GEMM that is far from memory speed for 1-16 rows (on
this project's 2-core AMD EPYC machine MKL also ran its packed kernel slowly). oneDNN packs a weight
once (``torch.ops.mkldnn._reorder_linear_weight``) and ``_linear_pointwise`` multiplies against it.
Measured side by side, all 30 layers of SmolLM2-135M plus its lm_head, fp32, random weights streamed
from memory (``python scripts/bench_linears.py --rows 1,5 --repeats 3``): 1 row 45.5 -> 26.8 ms,
5 rows 69.3 -> 21.0 ms.

``pack_linears`` swaps every ``nn.Linear`` of a model for a ``PackedLinear`` (a subclass: same weight
Parameter, same state dict, ``isinstance(m, nn.Linear)`` still holds) that takes the packed path
without autograd and stock ``F.linear`` when gradients are on (training). The Hugging Face baseline
runs the same modules, so speedups compare decoding strategies, not kernels. Results equal
``F.linear`` up to float rounding. It costs one extra copy of every linear weight in memory, is CPU
fp32 only, and does nothing where PyTorch was built without oneDNN. The model's own code is
untouched: the modules are driven through their usual ``forward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def onednn_packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _version(weight: torch.Tensor) -> int:
    """The in-place edit counter; tensors made under ``torch.inference_mode`` have none (-1)."""
    return -1 if weight.is_inference() else weight._version


class PackedLinear(nn.Linear):
    """``nn.Linear`` with a oneDNN-packed copy of its weight (inference only).

    The packed copy follows the weight through ``.to()``/``load_state_dict`` and in-place edits that bump
    its version counter (re-packed on CPU fp32, dropped elsewhere); an edit through ``weight.data``
    bypasses the counter and needs an explicit ``repack()``."""

    _packed: torch.Tensor | None = None
    _packed_version = -1

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> PackedLinear:
        if "_onednn_linear" not in cls.__dict__:  # resolved once: op lookup costs microseconds per call
            cls._onednn_linear = torch.ops.mkldnn._linear_pointwise
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
            with torch.no_grad():  # the batch-size hint does not restrict later calls
                self._packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), 8)
            self._packed_version = _version(weight)
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
        if self._packed is not None and not torch.is_grad_enabled():
            if _version(self.weight) != self._packed_version:  # edited in place since packing (an optimizer step)
                self.repack()
            return self._onednn_linear(x.contiguous(), self._packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def pack_linears(model: nn.Module) -> int:
    """Replace every fp32 CPU ``nn.Linear`` under ``model`` by a ``PackedLinear``; returns how many."""
    if not onednn_packing_available():
        return 0
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.device.type == "cpu" and child.weight.dtype == torch.float32:
                setattr(parent, name, PackedLinear.from_linear(child))
                swapped += 1
    return swapped
