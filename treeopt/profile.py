"""Measure verify-step latency against tree size on this device (``treeopt profile``).

Each size runs the runtime's real step (heads, candidate lookup, one forward over N tree tokens with
the tree mask, acceptance, K/V move) after a prefill of ``context`` tokens, with warm-up steps first;
the median and spread of ``repeats`` timed steps are recorded. Size 1 is the plain decoding step
(no heads). The tree shape only changes the mask, not the cost, so a synthetic tree is used.

Sizes are timed round-robin (one step of each size, then the next round), not one size after another:
on a shared machine whose speed drifts in phases, a slow phase then slows every size alike instead of
bending the curve, and the chosen budget depends on the curve's shape, not its level.
The price: every size's KV cache (context + steps) is allocated at once, so peak memory grows with the
number of sizes (about 350 MB for SmolLM2-135M at the default sizes and context).
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
from medusa_runtime.models import dtype_name
from medusa_runtime.spec import TreeSpec

from . import __version__
from .tuning import LATENCY_FORMAT, PROFILE_SIZES


def synthetic_tree(nodes: int, depth: int, width: int = 10) -> TreeSpec:
    """A plausible tree of ``nodes`` tokens: paths ordered by rank sum + depth (prefix-closed)."""
    candidates = [p for d in range(1, depth + 1) for p in itertools.product(range(width), repeat=d)]
    candidates.sort(key=lambda p: (sum(p) + len(p), p))
    if nodes - 1 > len(candidates):
        raise ValueError(f"a {nodes}-node tree does not fit depth {depth} x width {width}")
    return TreeSpec(candidates[: nodes - 1])


def profile_latency(loaded, heads, sizes=PROFILE_SIZES, repeats: int = 20, warmup: int = 3, context: int = 256,
                    progress: bool = True) -> dict:
    vocab = loaded.model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (context,), generator=g).tolist()
    sizes = sorted(set(sizes) | {1})  # the plain step is the baseline of every speedup: always measured
    runs = []  # (nodes, decoder, state) for every size, prefilled before any timing
    for nodes in sizes:
        spec = synthetic_tree(nodes, heads.num_heads if heads is not None else 1)
        decoder = MedusaDecoder(loaded.model, heads if nodes > 1 else None, spec, eos_token_ids=())
        max_new = (warmup + repeats) * (spec.depth + 1) + 2
        limit = getattr(loaded.model.config, "max_position_embeddings", None)
        fits = prompt if limit is None else prompt[: max(1, limit - max_new)]  # a short-context model: shorter prefix
        runs.append((nodes, decoder, decoder.prefill(fits, max_new)))
    times: dict[int, list[float]] = {nodes: [] for nodes in sizes}
    with tqdm(total=(warmup + repeats) * len(runs), desc="profile: verify step latency", disable=not progress) as bar:
        for i in range(warmup + repeats):
            for nodes, decoder, state in runs:
                sync_device(loaded.device)
                t0 = time.perf_counter()
                decoder.step(state)
                sync_device(loaded.device)
                if i >= warmup:
                    times[nodes].append((time.perf_counter() - t0) * 1000)
                bar.update()
    rows = []
    for nodes in sizes:
        t = sorted(times[nodes])
        rows.append({"nodes": nodes, "median_ms": round(statistics.median(t), 3), "min_ms": round(t[0], 3),
                     "max_ms": round(t[-1], 3), "p10_ms": round(t[len(t) // 10], 3),
                     "p90_ms": round(t[(len(t) * 9) // 10 - (1 if len(t) % 10 == 0 else 0)], 3), "repeats": repeats})
    plain = rows[0]
    return {
        "format": LATENCY_FORMAT, "version": 1, "device": device_name(loaded.device),
        "dtype": dtype_name(loaded.dtype), "torch": torch.__version__, "model": loaded.name,
        "heads": heads.num_heads if heads is not None else 0, "context_tokens": context, "warmup": warmup, "order": "round-robin",
        "host": platform.node(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": f"treeopt {__version__}", "plain_step": plain, "verify": [r for r in rows if r["nodes"] > 1] or [plain],
    }
