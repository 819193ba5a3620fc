"""Measure verify-step latency against tree size on this device (``treeopt profile``).

Each size runs the runtime's real step (heads, candidate lookup, one forward over N tree tokens with
the tree mask, acceptance, K/V move) after a prefill of ``context`` tokens, with warm-up steps first;
the median and spread of ``repeats`` timed steps are recorded. Size 1 is the plain decoding step
(no heads). The tree shape only changes the mask, not the cost, so a synthetic tree is used.
"""

from __future__ import annotations

import datetime
import itertools
import platform
import statistics
import time

import torch
from tqdm import tqdm

from medusa_runtime.bench import sync_device, device_name
from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.spec import TreeSpec

from . import __version__
from .tuning import LATENCY_FORMAT

DEFAULT_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def synthetic_tree(nodes: int, depth: int, width: int = 10) -> TreeSpec:
    """A plausible tree of ``nodes`` tokens: paths ordered by rank sum + depth (prefix-closed)."""
    candidates = [p for d in range(1, depth + 1) for p in itertools.product(range(width), repeat=d)]
    candidates.sort(key=lambda p: (sum(p) + len(p), p))
    if nodes - 1 > len(candidates):
        raise ValueError(f"a {nodes}-node tree does not fit depth {depth} x width {width}")
    return TreeSpec(candidates[: nodes - 1])


def profile_latency(loaded, heads, sizes=DEFAULT_SIZES, repeats: int = 20, warmup: int = 3, context: int = 256,
                    progress: bool = True) -> dict:
    vocab = loaded.model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (context,), generator=g).tolist()
    rows = []
    plain = None
    for nodes in tqdm(sorted(set(sizes)), desc="profile: verify step latency", disable=not progress):
        spec = synthetic_tree(nodes, heads.num_heads if heads is not None else 1)
        decoder = MedusaDecoder(loaded.model, heads if nodes > 1 else None, spec, eos_token_ids=())
        max_new = (warmup + repeats) * (spec.depth + 1) + 2
        limit = getattr(loaded.model.config, "max_position_embeddings", None)
        fits = prompt if limit is None else prompt[: max(1, limit - max_new)]  # a short-context model: shorter prefix
        state = decoder.prefill(fits, max_new)
        times = []
        for i in range(warmup + repeats):
            sync_device(loaded.device)
            t0 = time.perf_counter()
            decoder.step(state)
            sync_device(loaded.device)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        row = {"nodes": nodes, "median_ms": round(statistics.median(times), 3), "min_ms": round(times[0], 3),
               "max_ms": round(times[-1], 3), "p10_ms": round(times[len(times) // 10], 3),
               "p90_ms": round(times[(len(times) * 9) // 10 - (1 if len(times) % 10 == 0 else 0)], 3), "repeats": repeats}
        if nodes == 1:
            plain = row
        rows.append(row)
    if plain is None:  # always measure the plain step: it is the baseline of every speedup
        return profile_latency(loaded, heads, tuple(sizes) + (1,), repeats, warmup, context, progress)
    return {
        "format": LATENCY_FORMAT, "version": 1, "device": device_name(loaded.device),
        "dtype": str(loaded.dtype).replace("torch.", ""), "torch": torch.__version__, "model": loaded.name,
        "heads": heads.num_heads if heads is not None else 0, "context_tokens": context, "warmup": warmup,
        "host": platform.node(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": f"treeopt {__version__}", "plain_step": plain, "verify": [r for r in rows if r["nodes"] > 1] or [plain],
    }
