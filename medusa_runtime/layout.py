"""Faster linears on CPU: oneDNN's pre-packed fp32 GEMM, for the few rows tree verify feeds.

Stock ``nn.Linear`` on CPU calls a generic BLAS GEMM whose speed on a few rows depends on the machine.
oneDNN packs a weight once (``torch.ops.mkldnn._reorder_linear_weight``) and ``_linear_pointwise``
multiplies against it. ``python scripts/bench_linears.py`` (all 30 layers of SmolLM2-135M plus its lm_head,
fp32, random weights streamed from memory) measured, in ms per pass, stock -> packed:

- 2-core AMD EPYC VM: 1 row 46.6 -> 27.2, 2 rows 79.5 -> 32.2, 5 rows 71.9 -> 21.3 (packed always wins);
- 2-core Intel Xeon VM (AVX512-BF16, AMX): 1 row 20.9 -> 26.7, 2 rows 22.2 -> 27.2, 3 rows 34.6 -> 29.1,
  8 rows 43.2 -> 34.2 (stock wins on 1-2 rows: MKL's GEMV).

So the kernel for 1-2 rows (plain decoding, the Hugging Face baseline, the heads' guesses) is chosen per
machine: ``packed_min_rows()`` times both kernels on 1 and 2 rows the first time it runs on a machine (about
2 s, weights streamed from memory) and keeps the choice in ``~/.cache/medusa_runtime/linear_kernels.json``,
so every later process runs the same kernels (a choice timed in each process flipped between runs under
this VM's noise); ``MEDUSA_PACKED_MIN_ROWS`` (1, 2 or 3) overrides it. 3 rows and more always take the
packed kernel. The baseline is then as fast as stock ``generate`` can be on the machine, and speedups
compare decoding strategies, not kernels.

``pack_linears`` swaps every ``nn.Linear`` of a model for a ``PackedLinear`` (a subclass: same weight
Parameter, same state dict, ``isinstance(m, nn.Linear)`` still holds) that takes the packed path without
autograd from ``packed_min_rows()`` rows, and stock ``F.linear`` otherwise (fewer rows; training). Results
equal ``F.linear`` up to float rounding. It costs one extra copy of every linear weight in memory, is CPU
fp32 only, and does nothing where PyTorch was built without oneDNN. The model's own code is untouched: the
modules are driven through their usual ``forward``.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MIN_ROWS_ENV = "MEDUSA_PACKED_MIN_ROWS"
SMALL_ROWS = (1, 2)  # the row counts whose kernel is chosen per machine; from 3 rows on, packed


def onednn_packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def weight_version(weight: torch.Tensor) -> int:
    """The in-place edit counter; tensors made under ``torch.inference_mode`` have none (-1)."""
    return -1 if weight.is_inference() else weight._version


@functools.cache
def packed_min_rows() -> int:
    """From how many rows PackedLinear takes the packed kernel: 1, 2 or 3 (see the module docstring). The
    environment variable wins; otherwise the choice measured on this machine, read from the kernel cache file
    (``kernel_cache_file``) or, the first time, measured (``measure_packed_min_rows``, about 2 s) and written there,
    so that every process on a machine runs the same kernels."""
    declared = os.environ.get(MIN_ROWS_ENV)
    if declared is not None:
        if declared not in ("1", "2", "3"):
            raise ValueError(f"environment variable {MIN_ROWS_ENV}={declared!r}: use 1, 2 or 3 (the row count from which "
                             f"linears take oneDNN's packed kernel), or unset it to use the measured choice")
        return int(declared)
    if not onednn_packing_available():
        return 1
    path, key = kernel_cache_file(), machine_key()
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no file yet, or one that cannot be read: measure (again)
        known = {}
    if not isinstance(known, dict):
        known = {}
    if known.get(key) in (1, 2, 3):
        return known[key]
    known[key] = measure_packed_min_rows()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError:  # a read-only home: the choice still holds for this process
        pass
    return known[key]


def kernel_cache_file() -> Path:
    """Where the measured choice is kept: $XDG_CACHE_HOME (default ~/.cache)/medusa_runtime/linear_kernels.json.
    Delete it to measure again."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "medusa_runtime" / "linear_kernels.json"


def machine_key() -> str:
    """What the choice depends on: the CPU model, the threads torch uses and the torch version."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:  # not Linux
        pass
    return f"{model} | {torch.get_num_threads()} threads | torch {torch.__version__}"


def measure_packed_min_rows(matrices: int = 64, repeats: int = 7) -> int:
    """Time stock F.linear and the packed kernel on 1 and 2 rows against ``matrices`` weights of SmolLM2's MLP shape
    (1536 x 576; 64 of them are 226 MB, more than a cache holds, as a decoding step streams its weights), the two
    kernels alternating, medians of ``repeats`` passes; -> the fewest rows at which the packed kernel wins (3: neither)."""
    weights = [torch.rand(1536, 576) for _ in range(matrices)]
    packed = [torch.ops.mkldnn._reorder_linear_weight(w, 8) for w in weights]
    linear = torch.ops.mkldnn._linear_pointwise

    def seconds(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    with torch.inference_mode():
        for rows in SMALL_ROWS:
            x = torch.rand(rows, 576)
            stock, onednn = [], []
            for _ in range(repeats + 1):  # the first pass of each warms up
                stock.append(seconds(lambda: [F.linear(x, w) for w in weights]))
                onednn.append(seconds(lambda: [linear(x, p, None, "none", [], "") for p in packed]))
            if statistics.median(onednn[1:]) < statistics.median(stock[1:]):
                return rows
    return SMALL_ROWS[-1] + 1


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
            self._packed_version = weight_version(weight)
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
        if self._packed is not None and not torch.is_grad_enabled() and x.numel() >= packed_min_rows() * x.shape[-1]:
            if weight_version(self.weight) != self._packed_version:  # edited in place since packing (an optimizer step)
                self.repack()
            return self._onednn_linear(x.contiguous(), self._packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def frozen_linear(weight: torch.Tensor) -> nn.Linear:
    """An inference-only, bias-free linear over ``weight`` [out, in] (a tensor it owns: pass a copy), oneDNN-packed
    where packing is available."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    linear.weight = nn.Parameter(weight, requires_grad=False)
    return PackedLinear.from_linear(linear) if onednn_packing_available() else linear


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
