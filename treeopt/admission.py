"""How a batch admits requests, described once, and the tokens/s that description gives (what every prediction is).

Two ways of serving B rows, each an ``Admission``:

- ``static`` (``bench``, ``sweep``): a batch starts together, its B prompts prefilled together padded to the longest;
  rows leave when they finish and none join, so the batch's last steps run fewer rows; the next batch starts when its
  last row ends; the last batch is filled up with the first prompts again (``medusa_runtime.harness.batches_of``).
- ``continuous`` (in-flight batching, as TensorRT-LLM serves and ``MedusaDecoder.serve`` runs): before every step the
  freed slots are refilled from the queue, the newcomers prefilled together while the batch waits.

``tokens_per_s`` runs that description over requests replayed from calibration (``PromptReplay``: each prompt's
tokens and verify steps under one tree, its prompt length), many random orders of them, with step and prefill times
from a latency profile (``tuning.BatchLatency``). Continuous batching of an endless queue (a server's steady state:
every step runs B rows, each request pays its own prefill) is the simulation's limit, computed in closed form. Without
prompt lengths or a profiled prefill, a request's prefill counts as one step (the replay counts it as one).

This module neither decodes nor times, and chooses nothing (``choice.py`` does); ``serve`` and ``bench`` implement
the admission this describes (``medusa_runtime/decoding.py``, ``medusa_runtime/bench.py``).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from .tuning import BatchLatency

GROUPINGS = 32  # random orders of the calibration prompts


@dataclass(frozen=True)
class Admission:
    """When waiting requests join a batch."""

    name: str
    refill: bool  # True: freed slots are refilled before the next step; False: a new batch only once every row ended
    whole_batches: bool  # the queue is filled up to whole batches with its first requests again (bench's batches)
    follows_queue: bool  # a burst of ``queue`` requests is served; False: the calibration prompts themselves, each once
    description: str


ADMISSIONS = {
    "static": Admission("static", refill=False, whole_batches=True, follows_queue=False,
                        description="rows leave when done, none join"),
    "continuous": Admission("continuous", refill=True, whole_batches=False, follows_queue=True,
                            description="finished rows replaced at once"),
}
BATCHING = tuple(ADMISSIONS)
DEFAULT_BATCHING = "static"


def admission(batching: str) -> Admission:
    """The admission of a ``--batching`` name; ValueError naming the option otherwise."""
    if batching not in ADMISSIONS:
        raise ValueError(f"--batching {batching!r}: use one of {', '.join(BATCHING)}")
    return ADMISSIONS[batching]


@dataclass(frozen=True)
class PromptReplay:
    """One calibration prompt decoded with one tree: what the simulation admits as a request."""

    tokens: int  # new tokens
    steps: int  # decoding steps, the prefill (which yields the first token) counted as one
    prompt_tokens: int | None  # its prompt's length (None: stats that predate the field)


def tokens_per_s(replays: list[PromptReplay], batch: int, nodes: int, latency: BatchLatency, batching: str,
                 queue: int | None = None, groupings: int = GROUPINGS, seed: int = 0) -> float:
    """Tokens/s of ``batch`` rows decoding with an ``nodes``-node tree (1: plain decoding) under ``batching``.
    ``queue``: continuous batching of a burst of that many requests (the replays in random orders, cycled), simulated
    to its end, so its last steps run fewer rows; None: an endless queue. Static batches run the replays themselves
    (each once per order, the last batch filled up), whatever ``queue``."""
    rule = admission(batching)
    live = [r for r in replays if r.steps > 0]
    if not live:
        raise ValueError("no prompt generated tokens: nothing to predict from")
    prefill = latency.has_prefill and all(r.prompt_tokens is not None for r in live)
    if rule.follows_queue and queue is None:
        return _endless_queue(live, batch, nodes, latency, prefill)
    step_ms = [0.0] + [latency.step_ms(b, nodes) for b in range(1, batch + 1)]  # by rows decoding
    rng = random.Random(seed)
    tokens = ms = 0.0
    for _ in range(groupings):
        order = live[:]
        rng.shuffle(order)
        length = queue if rule.follows_queue else len(order)
        if rule.whole_batches:
            length = -(-length // batch) * batch
        run_tokens, run_ms = _run_queue([order[i % len(order)] for i in range(length)], batch, rule, step_ms,
                                        latency, prefill)
        tokens, ms = tokens + run_tokens, ms + run_ms
    return tokens * 1000.0 / ms


def _endless_queue(live: list[PromptReplay], batch: int, nodes: int, latency: BatchLatency, prefill: bool) -> float:
    """Continuous batching with a queue that never empties: every step runs ``batch`` rows, each request its own prefill."""
    steps = sum(r.steps - 1 for r in live) if prefill else sum(r.steps for r in live)  # the prefill is a step of the replay
    ms = steps / batch * latency.step_ms(batch, nodes)
    if prefill:
        ms += sum(latency.prefill_ms(1, r.prompt_tokens) for r in live)
    return sum(r.tokens for r in live) * 1000.0 / ms


def _run_queue(queue: list[PromptReplay], batch: int, rule: Admission, step_ms: list[float], latency: BatchLatency,
               prefill: bool) -> tuple[float, float]:
    """(tokens, ms) of serving ``queue`` in order through ``batch`` slots under ``rule``."""
    waiting = deque(queue)
    running: list[int] = []  # steps each row still has to run
    tokens = ms = 0.0
    while waiting or running:
        if waiting and len(running) < batch and (rule.refill or not running):
            joining = [waiting.popleft() for _ in range(min(batch - len(running), len(waiting)))]
            # the newcomers' prefill (their first step) stalls the batch
            ms += latency.prefill_ms(len(joining), max(r.prompt_tokens for r in joining)) if prefill else step_ms[len(joining)]
            tokens += sum(r.tokens for r in joining)
            running = [left for left in running + [r.steps - 1 for r in joining] if left > 0]
            continue
        k = min(running)  # steps until the next row ends (and a slot frees)
        ms += k * step_ms[len(running)]
        running = [left - k for left in running if left > k]
    return tokens, ms
