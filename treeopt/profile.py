"""Measure verify-step latency against tree size and batch size on this device (``treeopt profile``).

Each (batch size B, tree size N) runs the runtime's real step (heads, candidate lookup, one forward over
B x N tree tokens with the per-row tree masks, acceptance, K/V move) after a prefill of B prompts of about
``context`` tokens (rows differ by a few tokens, as a server's rows do, so the per-row cache writes are
timed), with warm-up steps first; the median and spread of ``repeats`` timed steps are recorded. Size 1 is
the plain decoding step (no heads) at that batch size. A batch's prefill is timed too, at two prompt
lengths (starting a batch is part of what a batch costs). The tree shape only changes the mask, not the cost,
so a synthetic tree is used.

Within one batch size, sizes are timed round-robin (one step of each size, then the next round), not one
size after another: on a shared machine whose speed drifts in phases, a slow phase then slows every size
alike instead of bending the curve, and the chosen budget depends on the curve's shape, not its level.
For the same reason batch sizes are visited in turn, several times (``passes``, 3 by default), each visit
timing its share of the rounds (and of the prefills) after warm-up steps: timed one after another, a slow phase
that fell on one batch size made that whole row of the profile slow (2026-12-02: batch 2's steps read 10-17% slow
against the sweep that followed). The price of round-robin: every size's KV cache is allocated at once within
a visit, so peak memory grows with sizes x batch size (about 350 MB per row of batch for SmolLM2-135M at the
default sizes and context); each visit prefills its sizes again.
"""

from __future__ import annotations

import datetime
import itertools
import platform
import statistics
import time

import torch
from tqdm import tqdm

from medusa_runtime.harness import device_name, sync_device
from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.models import dtype_name
from medusa_runtime.sampling import SamplingConfig
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


PREFILL_REPEATS = 5


def _row_prompts(vocab: int, context: int, batch_size: int, limit: int | None, max_new: int) -> list[list[int]]:
    """B random prompts of about ``context`` tokens, each a few tokens shorter than the one before."""
    g = torch.Generator().manual_seed(0)
    longest = context if limit is None else max(1, min(context, limit - max_new))  # a short-context model: shorter prefix
    return [torch.randint(0, vocab, (max(1, longest - 3 * row),), generator=g).tolist() for row in range(batch_size)]


def _summary(nodes: int, times: list[float], repeats: int) -> dict:
    t = sorted(times)
    return {"nodes": nodes, "median_ms": round(statistics.median(t), 3), "min_ms": round(t[0], 3),
            "max_ms": round(t[-1], 3), "p10_ms": round(t[len(t) // 10], 3),
            "p90_ms": round(t[(len(t) * 9) // 10 - (1 if len(t) % 10 == 0 else 0)], 3), "repeats": repeats}


def time_batch(loaded, heads, batch_size: int, sizes: list[int], repeats: int, warmup: int, context: int, bar,
               sampling: SamplingConfig | None, times: dict[int, list[float]]) -> None:
    """One visit to a batch size: every size prefilled, then ``warmup`` untimed and ``repeats`` timed rounds of one
    step of each size (round-robin); the step times (ms) are added to ``times[nodes]``."""
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    runs = []  # (nodes, decoder, state) for every size, prefilled before any timing
    for nodes in sizes:
        spec = synthetic_tree(nodes, heads.num_heads if heads is not None else 1)
        decoder = MedusaDecoder(loaded.model, heads if nodes > 1 else None, spec, eos_token_ids=(), sampling=sampling)
        max_new = (warmup + repeats) * (spec.depth + 1) + 2
        prompts = _row_prompts(loaded.model.config.vocab_size, context, batch_size, limit, max_new)
        runs.append((nodes, decoder, decoder.prefill(prompts, max_new)))
    for i in range(warmup + repeats):
        for nodes, decoder, state in runs:
            sync_device(loaded.device)
            t0 = time.perf_counter()
            decoder.step(state)
            sync_device(loaded.device)
            if i >= warmup:
                times[nodes].append((time.perf_counter() - t0) * 1000)
            bar.update()


def split_repeats(repeats: int, passes: int) -> list[int]:
    """``repeats`` timed rounds spread over ``passes`` visits (the first visits take the remainder); no empty visit."""
    passes = max(1, min(passes, repeats))
    return [repeats // passes + (1 if p < repeats % passes else 0) for p in range(passes)]


def batch_entry(batch_size: int, sizes: list[int], times: dict[int, list[float]], prefill: list[dict]) -> dict:
    """One batch size's entry of the latency file: {"batch_size", "plain_step", "verify", "prefill"}."""
    rows = [_summary(nodes, times[nodes], len(times[nodes])) for nodes in sizes]
    return {"batch_size": batch_size, "plain_step": rows[0], "verify": [r for r in rows if r["nodes"] > 1] or [rows[0]],
            "prefill": prefill}


def time_prefills(loaded, batch_size: int, context: int, bar, repeats: int, times: dict[int, list[float]]) -> None:
    """A batch's prefill (B prompts right-padded to the longest) at two prompt lengths, a quarter of ``context`` and
    ``context`` (what starting a batch costs; ``plan.py`` interpolates it linearly in prompt length): one warm-up and
    ``repeats`` timed prefills of each, added to ``times[length]`` (ms)."""
    decoder = MedusaDecoder(loaded.model, None, TreeSpec([]), eos_token_ids=())
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    for length in sorted({max(1, context // 4), context}):
        prompts = _row_prompts(loaded.model.config.vocab_size, length, batch_size, limit, 2)
        tokens = max(len(p) for p in prompts)
        for i in range(repeats + 1):  # the first is a warm-up
            sync_device(loaded.device)
            t0 = time.perf_counter()
            decoder.prefill(prompts, 1)
            sync_device(loaded.device)
            if i:
                times.setdefault(tokens, []).append((time.perf_counter() - t0) * 1000)
            bar.update()


def prefill_entries(times: dict[int, list[float]]) -> list[dict]:
    out = []
    for tokens in sorted(times):
        summary = _summary(1, times[tokens], len(times[tokens]))
        del summary["nodes"]
        out.append({"tokens": tokens, **summary})
    return out


def profile_latency(loaded, heads, sizes=PROFILE_SIZES, repeats: int = 20, warmup: int = 3, context: int = 256,
                    progress: bool = True, batch_sizes=(1,), sampling: SamplingConfig | None = None, passes: int = 3) -> dict:
    """The latency file: batch size 1's rows at the top level (what every reader takes by default) and one
    entry per batch size under "batches". ``sampling``: time the steps with that rule's draws (default greedy).
    ``passes``: with several batch sizes, each is visited this many times, in turn, its timed rounds split between
    the visits (a slow phase of a shared machine then touches every batch size, not just the one it fell on)."""
    sampling = sampling or SamplingConfig()
    sizes = sorted(set(sizes) | {1})  # the plain step is the baseline of every speedup: always measured
    batch_sizes = sorted(set(batch_sizes) | {1})
    steps = split_repeats(repeats, passes if len(batch_sizes) > 1 else 1)
    prefills = split_repeats(PREFILL_REPEATS, len(steps))
    per_visit = [(warmup + r) * len(sizes) + (2 * (prefills[v] + 1) if v < len(prefills) else 0) for v, r in enumerate(steps)]
    total = sum(per_visit) * len(batch_sizes)
    step_times = {b: {nodes: [] for nodes in sizes} for b in batch_sizes}
    prefill_times: dict[int, dict[int, list[float]]] = {b: {} for b in batch_sizes}
    with tqdm(total=total, desc="profile: verify step latency", disable=not progress) as bar:
        for visit, rounds in enumerate(steps):
            for b in batch_sizes:
                bar.set_postfix(batch_size=b, visit=f"{visit + 1}/{len(steps)}")
                time_batch(loaded, heads, b, sizes, rounds, warmup, context, bar, sampling, step_times[b])
                if visit < len(prefills):
                    time_prefills(loaded, b, context, bar, prefills[visit], prefill_times[b])
    batches = [batch_entry(b, sizes, step_times[b], prefill_entries(prefill_times[b])) for b in batch_sizes]
    return {
        "format": LATENCY_FORMAT, "version": 2, "device": device_name(loaded.device),
        "dtype": dtype_name(loaded.dtype), "torch": torch.__version__, "model": loaded.name,
        "heads": heads.num_heads if heads is not None else 0, "context_tokens": context, "warmup": warmup, "order": "round-robin",
        "passes": len(steps),
        "host": platform.node(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": f"treeopt {__version__}", "acceptance": sampling.rule, "sampling": sampling.settings(),
        "plain_step": batches[0]["plain_step"], "verify": batches[0]["verify"],
        "batches": batches,
    }
