"""Faster linears on CPU for the few rows tree verify feeds: a kernel per row count, measured per machine.

A linear over a few rows (a decoding step: 1 row; a verify step: one per tree token) streams every weight from
memory and does little arithmetic, and which GEMM streams best at 1-8 rows depends on the machine. Three kernels
are on offer:

- ``stock``: ``F.linear`` (a BLAS GEMM; MKL's GEMV for one row);
- ``onednn``: oneDNN's GEMM against a weight packed once (``torch.ops.mkldnn._reorder_linear_weight``);
- ``mkl``: MKL's packed GEMM (``torch.ops.mkl._mkl_reorder_linear_weight``), packed for one exact row count (a
  tree's token count), kept per row count, made the first time that count is seen.

``python experiments/bench_linears.py`` (all 30 layers of SmolLM2-135M plus its lm_head, fp32, random weights
streamed from memory) prints ms per pass for each. Measured so far:

- 2-core AMD EPYC VM: stock 1 row 46.6, 2 rows 79.5, 5 rows 71.9 -> oneDNN 27.2, 32.2, 21.3 (oneDNN always won;
  MKL's packed GEMM was not on offer then);
- 2-core Intel Xeon VM (AVX512-BF16, AMX), stock / oneDNN / MKL: 1 row 19.9 / 25.1 / 21.1, 2 rows 20.9 / 26.0 /
  20.2, 3 rows 23.0 / 28.1 / 24.3, 4 rows 33.6 / 28.8 / 24.1, 8 rows 41.7 / 34.9 / 29.1, 64 rows 85.4 / 86.6 /
  72.8. ``python scripts/verify_kernels.py``: verify steps of 3 / 4 / 6 / 8 tree tokens of the real model took
  49.3 / 50.6 / 54.2 / 57.3 ms with stock for 1-2 rows and oneDNN above, 39.0 / 43.5 / 48.9 / 50.5 ms with the
  table this module measures there (``1:stock,2:mkl,3:stock,4-8:mkl``).

So ``kernel_table()`` holds one kernel per row count 1..8 (``TABLE_ROWS``): the first time it runs on a machine it
times the three on a stack of SmolLM2-shaped weights larger than a cache (``measure_kernel_table``, a few seconds)
and keeps the table in ``~/.cache/medusa_runtime/linear_kernels.json`` keyed by ``machine_key()``, so that every
later process runs the same kernels (a choice timed in each process flipped between runs under a VM's noise).
``MEDUSA_LINEAR_KERNELS`` overrides it: one kernel for every row count (``stock``) or ``ROWS:KERNEL`` items
(``1-3:stock,4-8:mkl``; row counts left out take oneDNN). More than 8 rows (large trees, prefill) take oneDNN: an
MKL pack serves one exact row count, and prompt lengths vary.
The baseline (one row: plain decoding, Hugging Face ``generate``) is then as fast as the machine allows too, so
speedups compare decoding strategies, not kernels.

Memory: oneDNN's packed copy doubles every linear's weight; each row count that takes MKL's kernel adds one more
copy, made on first use or ahead of it by ``prepare_kernels`` (the decoder calls it once per batch it allocates,
``MedusaDecoder.new_state``, never per admission; the bench's warm-up calls it too), while the packs of all linears
together stay under a quarter of the machine's memory
(``mkl_pack_budget_bytes``); past that a row count takes oneDNN instead (a ``treeopt profile`` over many sizes of
a large model can hit it: its larger sizes then time oneDNN).

Why the table and the pack budget are process-wide rather than owned by a decoder: the table is a property of the
machine (CPU model, threads, torch build; ``machine_key``), timed once per machine and kept on disk, and it is read
by the ``PackedLinear`` modules of the model, which several decoders share (the serve bench runs a tree decoder and
a plain one over one model; the heads' layers are shared by their engine views): a table per decoder would run the
same linear with different kernels depending on who called it, and time the kernels again for every decoder. The
pack budget bounds the process's memory, which all decoders share. Nothing here is timed per call: ``kernel_table``
is computed once per process (``functools.cache``), so a request admitted mid-run never times kernels; its prefill
takes oneDNN past 8 prompt tokens (no pack needed), and only a prompt of 8 tokens or fewer may make an MKL pack.

``pack_linears`` swaps every ``nn.Linear`` of a model for a ``PackedLinear`` (a subclass: same weight Parameter,
same state dict, ``isinstance(m, nn.Linear)`` still holds) that takes the table's kernel without autograd and stock
``F.linear`` otherwise (training). Results equal ``F.linear`` up to float rounding. CPU fp32 only; nothing changes
where PyTorch was built without oneDNN. The model's own code is untouched: the modules are driven through their
usual ``forward``.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import time
import weakref
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

KERNELS_ENV = "MEDUSA_LINEAR_KERNELS"
KERNELS = ("stock", "onednn", "mkl")
TABLE_ROWS = 8  # row counts 1..TABLE_ROWS take the table's kernel; more rows take oneDNN's
WIDE_KERNEL = "onednn"


def onednn_packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def mkl_packing_available() -> bool:
    return onednn_packing_available() and torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


def available_kernels() -> tuple[str, ...]:
    return tuple(k for k, ok in zip(KERNELS, (True, onednn_packing_available(), mkl_packing_available())) if ok)


def weight_version(weight: torch.Tensor) -> int:
    """The in-place edit counter; tensors made under ``torch.inference_mode`` have none (-1)."""
    return -1 if weight.is_inference() else weight._version


def parse_kernel_table(text: str, where: str) -> tuple[str, ...]:
    """``stock`` (one kernel for every row count up to ``TABLE_ROWS``) or ``ROWS:KERNEL,...`` items, ROWS a count or
    a range ``A-B`` (row counts left out take oneDNN) -> a tuple indexed by row count (entry 0 unused)."""
    usage = (f"use one of {', '.join(available_kernels())} for every row count, or items such as "
             f"'1-3:stock,4-{TABLE_ROWS}:mkl' (row counts 1..{TABLE_ROWS})")
    text = text.strip()
    items = [f"1-{TABLE_ROWS}:{text}"] if ":" not in text else [i.strip() for i in text.split(",")]
    table = [WIDE_KERNEL] * (TABLE_ROWS + 1)
    for item in items:
        rows, _, kernel = item.partition(":")
        first, _, last = rows.partition("-")
        try:
            lo, hi = int(first), int(last or first)
        except ValueError:
            raise ValueError(f"{where}: {item!r} has no row count before ':'; {usage}") from None
        if not 1 <= lo <= hi <= TABLE_ROWS:
            raise ValueError(f"{where}: rows {rows!r} are outside 1..{TABLE_ROWS}; {usage}")
        if kernel not in available_kernels():
            raise ValueError(f"{where}: kernel {kernel!r} is unknown or not built into this PyTorch; {usage}")
        table[lo:hi + 1] = [kernel] * (hi - lo + 1)
    return tuple(table)


def format_kernel_table(table: tuple[str, ...]) -> str:
    """The inverse of ``parse_kernel_table``: runs of equal kernels as ``A-B:kernel`` items."""
    items, start = [], 1
    for rows in range(2, TABLE_ROWS + 2):
        if rows > TABLE_ROWS or table[rows] != table[start]:
            items.append(f"{start}:{table[start]}" if rows - 1 == start else f"{start}-{rows - 1}:{table[start]}")
            start = rows
    return ",".join(items)


@functools.cache
def kernel_table() -> tuple[str, ...]:
    """The kernel of each row count 1..TABLE_ROWS (index = rows; see the module docstring). The environment variable
    wins; otherwise the table measured on this machine, read from ``kernel_cache_file()`` or, the first time,
    measured (``measure_kernel_table``, a few seconds) and written there."""
    declared = os.environ.get(KERNELS_ENV)
    if declared is not None:
        return parse_kernel_table(declared, f"environment variable {KERNELS_ENV}={declared!r}")
    if not onednn_packing_available():
        return ("stock",) * (TABLE_ROWS + 1)
    path, key = kernel_cache_file(), machine_key()
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no file yet, or one that cannot be read: measure (again)
        known = {}
    if not isinstance(known, dict):
        known = {}
    if isinstance(known.get(key), str):
        try:
            return parse_kernel_table(known[key], str(path))
        except ValueError:  # written by another PyTorch build or an older layout: measure again
            pass
    table = measure_kernel_table()
    known[key] = format_kernel_table(table)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError:  # a read-only home: the table still holds for this process
        pass
    return table


def use_kernel_table(text: str) -> None:
    """Switch this process to the table ``text`` (a ``MEDUSA_LINEAR_KERNELS`` value), as if set before it started."""
    os.environ[KERNELS_ENV] = text
    kernel_table.cache_clear()


def kernel_for(rows: int) -> str:
    return kernel_table()[rows] if rows <= TABLE_ROWS else WIDE_KERNEL


def kernel_cache_file() -> Path:
    """Where the measured table is kept: $XDG_CACHE_HOME (default ~/.cache)/medusa_runtime/linear_kernels.json.
    Delete it to measure again."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "medusa_runtime" / "linear_kernels.json"


def machine_key() -> str:
    """What the table depends on: the CPU model, the threads torch uses and the torch version."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:  # not Linux
        pass
    return f"{model} | {torch.get_num_threads()} threads | torch {torch.__version__}"


LAYER_SHAPES = ((576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536))  # [out, in]


def time_kernels(weights: list[torch.Tensor], rows: int, repeats: int) -> dict[str, float]:
    """Median seconds of one pass of every available kernel over ``weights`` (each [out, in]) on ``rows`` rows, the
    kernels alternating within each pass, after one warm-up pass. MKL's packs are made for ``rows`` and dropped after."""
    inputs = {w.shape[1]: torch.rand(rows, w.shape[1]) for w in weights}
    runs = {"stock": lambda: [F.linear(inputs[w.shape[1]], w) for w in weights]}
    if onednn_packing_available():
        onednn = [torch.ops.mkldnn._reorder_linear_weight(w, 8) for w in weights]
        runs["onednn"] = lambda: [torch.ops.mkldnn._linear_pointwise(inputs[w.shape[1]], p, None, "none", [], "")
                                  for w, p in zip(weights, onednn)]
    if mkl_packing_available():
        mkl = [torch.ops.mkl._mkl_reorder_linear_weight(w, rows) for w in weights]
        runs["mkl"] = lambda: [torch.ops.mkl._mkl_linear(inputs[w.shape[1]], p, w, None, rows) for w, p in zip(weights, mkl)]
    return time_alternating(runs, repeats)


def time_alternating(runs: dict, repeats: int) -> dict[str, float]:
    """``runs``: name -> a callable doing one pass. Median seconds per pass of each, the callables alternating within
    every repeat (so a machine's drift hits them alike), after one warm-up pass each; under inference mode."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first pass of each warms up
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(times[1:]) for name, times in seconds.items()}


def measure_kernel_table(layers: int = 24, repeats: int = 5, rows_range=range(1, TABLE_ROWS + 1)) -> tuple[str, ...]:
    """Time every available kernel on each row count against ``layers`` x SmolLM2-135M's seven layer linears (24 of
    them are 340 MB, more than a cache holds, as a decoding step streams its weights; ``time_kernels``) -> the
    fastest kernel per row count."""
    weights = [torch.rand(out_features, in_features) for _ in range(layers) for out_features, in_features in LAYER_SHAPES]
    table = [WIDE_KERNEL] * (TABLE_ROWS + 1)
    for rows in rows_range:
        seconds = time_kernels(weights, rows, repeats)
        table[rows] = min(seconds, key=seconds.get)
    return tuple(table)


def mkl_pack_budget_bytes() -> int:
    """How much memory the MKL packs of all linears together may take: a quarter of the machine's."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):  # no sysconf (not POSIX): 4 GiB
        return 4 << 30


class _MklPackBudget:
    """Bytes held by MKL packs, given back when a pack is freed."""

    held = 0

    @classmethod
    def take(cls, nbytes: int) -> bool:
        if cls.held + nbytes > mkl_pack_budget_bytes():
            return False
        cls.held += nbytes
        return True

    @classmethod
    def give_back(cls, nbytes: int) -> None:
        cls.held -= nbytes


class PackedLinear(nn.Linear):
    """``nn.Linear`` that runs inference through the kernel ``kernel_for(rows)`` names, with a oneDNN-packed copy of
    its weight and MKL packs per row count made on first use.

    The packed copies follow the weight through ``.to()``/``load_state_dict`` and in-place edits that bump its
    version counter (re-packed on CPU fp32, dropped elsewhere); an edit through ``weight.data`` bypasses the
    counter and needs an explicit ``repack()``."""

    _packed: torch.Tensor | None = None
    _packed_version = -1

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> PackedLinear:
        if "_onednn_linear" not in cls.__dict__:  # resolved once: op lookup costs microseconds per call
            cls._onednn_linear = torch.ops.mkldnn._linear_pointwise
            cls._mkl_linear = torch.ops.mkl._mkl_linear if mkl_packing_available() else None
        packed = cls.__new__(cls)
        nn.Module.__init__(packed)
        packed.in_features, packed.out_features = linear.in_features, linear.out_features
        packed.weight = linear.weight  # shared, so tied weights stay tied
        packed.bias = linear.bias
        packed.repack()
        return packed

    def repack(self) -> None:
        weight = self.weight
        self._mkl_packs: dict[int, torch.Tensor | None] = {}  # rows -> MKL pack (None: over budget, use oneDNN)
        if weight.device.type == "cpu" and weight.dtype == torch.float32:
            with torch.no_grad():  # the batch-size hint does not restrict later calls
                self._packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), 8)
            self._packed_version = weight_version(weight)
        else:
            self._packed = None

    def mkl_pack(self, rows: int) -> torch.Tensor | None:
        """The weight packed by MKL for exactly ``rows`` rows, made on first use; None past the memory budget."""
        if rows not in self._mkl_packs:
            nbytes = self.weight.numel() * self.weight.element_size()
            pack = None
            if self._mkl_linear is not None and _MklPackBudget.take(nbytes):
                with torch.no_grad():
                    pack = torch.ops.mkl._mkl_reorder_linear_weight(self.weight.detach().contiguous(), rows)
                weakref.finalize(pack, _MklPackBudget.give_back, nbytes)
            self._mkl_packs[rows] = pack
        return self._mkl_packs[rows]

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.repack()
        return out

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.repack()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed is None or torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        rows = x.numel() // x.shape[-1]
        kernel = kernel_for(rows)
        if kernel == "stock":
            return F.linear(x, self.weight, self.bias)
        if weight_version(self.weight) != self._packed_version:  # edited in place since packing (an optimizer step)
            self.repack()
        if kernel == "mkl":
            pack = self.mkl_pack(rows)
            if pack is not None:
                return self._mkl_linear(x, pack, self.weight, self.bias, rows)
        return self._onednn_linear(x.contiguous(), self._packed, self.bias, "none", [], "")


def prepare_kernels(module: nn.Module, rows) -> None:
    """Make now the MKL packs that ``rows`` (row counts) will take under ``module``, so that decoding does not stop
    mid-stream to pack (0.2-1 s per row count for SmolLM2-135M): a batch's rows leave as they finish, and each
    smaller row count takes its own pack."""
    wanted = sorted({r for r in rows if 1 <= r <= TABLE_ROWS and kernel_for(r) == "mkl"})
    if not wanted:
        return
    for linear in module.modules():
        if isinstance(linear, PackedLinear) and linear._packed is not None:
            for r in wanted:
                linear.mkl_pack(r)


def frozen_linear(weight: torch.Tensor) -> nn.Linear:
    """An inference-only, bias-free linear over ``weight`` [out, in] (a tensor it owns: pass a copy), packed where
    packing is available."""
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
