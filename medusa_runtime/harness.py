"""The one measuring loop behind every benchmark (``bench``, ``bench --batching continuous``, ``sweep``).

Words: a *queue* is the prompts and each one's token limit; an *arm* decodes some of them (the runtime with a tree,
the runtime without one, Hugging Face ``generate``); a *unit* is what an arm decodes in one timed call (one static
batch, or the whole queue through B slots). ``measure`` runs every arm once per unit and round, in an order rotated
every time so that the machine's drift favours no arm, each call timed between device syncs; ``References`` holds each
prompt's own reference decode (greedy, or keyed plain sampling), computed once and untimed; ``check`` marks every
row identical or not and explains each divergence by its position and the top-2 margin there.

A static batch has one definition (``batches_of``): B consecutive prompts, the last batch filled up with the first
prompts again, so that every batch has B rows, as on a server that runs fixed-shape batches. ``bench`` and ``sweep``
decode each batch as a unit and count every row; a queue's static arm (``StaticBatches``) decodes the batches one
after another and keeps each request's first decode, so a refill's work costs time but counts no tokens.

This module measures and checks; summarising the runs into a report is the caller's (bench.py, serve_bench.py,
treeopt/sweep.py). It builds no trees and loads no models.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from tqdm import tqdm

from .decoding import MedusaDecoder
from .hf_decode import first_difference, hf_generate, hf_reference, top2_margin
from .layout import prepare_kernels
from .sampling import SamplingConfig
from .served import per_prompt_limits


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batches_of(count: int, batch_size: int) -> list[list[int]]:
    """Prompt indices per static batch: consecutive prompts, the last batch filled up with the first prompts again."""
    if count < 1 or batch_size < 1:
        raise ValueError(f"need at least one prompt and a batch size >= 1 (got {count} prompts, batch size {batch_size})")
    batches = -(-count // batch_size)
    return [[(b * batch_size + i) % count for i in range(batch_size)] for b in range(batches)]


@dataclass
class Queue:
    """The prompts a benchmark decodes and each one's token limit."""

    prompts: list[list[int]]
    limits: list[int]

    @classmethod
    def of(cls, prompts: list[list[int]], max_new_tokens: int | list[int]) -> "Queue":
        limits = per_prompt_limits(max_new_tokens, len(prompts))
        if len(limits) != len(prompts):
            raise ValueError(f"{len(limits)} token limits for {len(prompts)} prompts")
        return cls(prompts, limits)

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass
class Row:
    """One request's output in one timed call."""

    prompt: int  # index into the queue
    tokens: list[int]
    steps: int | None  # forward passes that produced it, prefill included (None: HF generate does not say)
    first_s: float  # from the call's start to the request's first token
    finished_s: float  # ... to its last
    identical: bool | None = None  # set by ``check`` (None: not checked)


@dataclass
class Run:
    """One arm's timed call on one unit in one round."""

    arm: str
    unit: int
    round: int
    rows: list[Row]
    seconds: float
    bookkeeping_s: float | None = None  # the runtime's time admitting and retiring requests, forwards excluded (None: HF)

    @property
    def tokens(self) -> int:
        return sum(len(r.tokens) for r in self.rows)


class Arm(Protocol):
    name: str
    checked: bool  # whether its rows must equal the references (HF's own sampling draws other text)
    bookkeeping_s: float | None  # the last call's admitting and retiring time (None: an arm that does not say)

    def decode(self, queue: Queue, indices: list[int], clock: Callable[[], float], limit: int | None = None) -> list[Row]:
        """Decode ``indices`` of the queue in one call (``limit``: a cap on every row's tokens, for warm-ups)."""


def _limits(queue: Queue, indices: list[int], limit: int | None) -> list[int]:
    return [min(queue.limits[i], limit) if limit else queue.limits[i] for i in indices]


@dataclass
class RuntimeArm:
    """The runtime on a unit: every row at once (``slots`` None: one static batch), or through ``slots`` rows with a
    request admitted as soon as one frees (continuous batching). ``oracles``: the references replace the heads'
    guesses (a ceiling); they must be fetched before timing starts (``References.fetch``)."""

    name: str
    decoder: MedusaDecoder
    slots: int | None = None
    oracles: "References | None" = None
    checked: bool = True
    bookkeeping_s: float | None = None

    def decode(self, queue: Queue, indices: list[int], clock: Callable[[], float], limit: int | None = None) -> list[Row]:
        oracles = [self.oracles.get(i) for i in indices] if self.oracles is not None else None
        out = self.decoder.serve([queue.prompts[i] for i in indices], _limits(queue, indices, limit), self.slots, oracles,
                                 clock=clock)
        self.bookkeeping_s = out.timings.bookkeeping_s
        return [Row(i, r.tokens, r.steps, r.first_token_s, r.finished_s) for i, r in zip(indices, out)]


@dataclass
class HFArm:
    """Hugging Face ``generate`` on a unit: left-padded to one batch, run to the unit's largest limit, each row cut at
    its own; a batch returns at once, so every row's first and last token arrive when the call ends."""

    name: str
    model: object
    eos_token_ids: list[int]
    sampling: SamplingConfig
    checked: bool = True
    bookkeeping_s: float | None = None

    def __post_init__(self):
        self.checked = self.checked and not self.sampling.sampled  # do_sample draws its own text, not the keyed one

    def decode(self, queue: Queue, indices: list[int], clock: Callable[[], float], limit: int | None = None) -> list[Row]:
        start = clock()
        limits = _limits(queue, indices, limit)
        out = hf_generate(self.model, [queue.prompts[i] for i in indices], max(limits), self.eos_token_ids, self.sampling)
        done = clock() - start
        return [Row(i, tokens[:n], None, done, done) for i, tokens, n in zip(indices, out, limits)]


@dataclass
class StaticBatches:
    """An arm run on a whole queue as consecutive static batches of ``batch_size`` (``batches_of``), each starting when
    the previous one ends; each request keeps its first decode (a refill row's second one is discarded)."""

    arm: RuntimeArm | HFArm
    batch_size: int
    name: str = ""
    checked: bool = True
    bookkeeping_s: float | None = None

    def __post_init__(self):
        self.name = self.name or self.arm.name
        self.checked = self.arm.checked

    def decode(self, queue: Queue, indices: list[int], clock: Callable[[], float], limit: int | None = None) -> list[Row]:
        start = clock()
        rows: dict[int, Row] = {}
        self.bookkeeping_s = None
        for batch in batches_of(len(indices), self.batch_size):
            offset = clock() - start
            decoded = self.arm.decode(queue, [indices[k] for k in batch], clock, limit)
            if self.arm.bookkeeping_s is not None:
                self.bookkeeping_s = (self.bookkeeping_s or 0.0) + self.arm.bookkeeping_s
            for row in decoded:
                if row.prompt not in rows:
                    row.first_s, row.finished_s = offset + row.first_s, offset + row.finished_s
                    rows[row.prompt] = row
        return [rows[i] for i in indices]


class References:
    """Each prompt's own reference decode, computed once on first use (untimed) or taken from an arm's run whose rows
    are exactly that decode (HF greedy at batch size 1: ``adopt``)."""

    def __init__(self, model, eos_token_ids: list[int], queue: Queue, sampling: SamplingConfig,
                 known: list[list[int]] | None = None):
        self.model, self.eos, self.queue, self.sampling = model, eos_token_ids, queue, sampling
        self.tokens: dict[int, list[int]] = dict(enumerate(known)) if known is not None else {}  # prompt -> its decode

    def get(self, i: int) -> list[int]:
        if i not in self.tokens:
            self.tokens[i] = hf_reference(self.model, self.queue.prompts[i], self.queue.limits[i], self.eos, self.sampling)
        return self.tokens[i]

    def fetch(self, indices, progress: bool = False, desc: str = "references") -> None:
        for i in tqdm(sorted(set(indices) - self.tokens.keys()), desc=desc, disable=not progress):
            self.get(i)

    def adopt(self, runs: list[Run], arm: str) -> None:
        for run in runs:
            if run.arm == arm:
                for row in run.rows:
                    self.tokens.setdefault(row.prompt, row.tokens)


def warm_up(model, arms: list, queue: Queue, unit: list[int], batch_size: int, limit: int = 8) -> None:
    """First calls pay for allocator and kernel warm-up: keep that out of every timing (the packed lm_head's row counts
    up to ``batch_size``, then each arm on the first unit with a short limit)."""
    prepare_kernels(model, range(1, batch_size + 1))
    for arm in arms:
        arm.decode(queue, unit, time.perf_counter, limit)


def measure(arms: list, queue: Queue, units: list[list[int]], device: torch.device, rounds: int = 1,
            progress: bool = True, desc: str = "measure", postfix: Callable[[list[Run]], dict] | None = None) -> list[Run]:
    """Every arm on every unit, ``rounds`` times, timed between device syncs; who goes first rotates with each call."""
    if rounds < 1:
        raise ValueError(f"--rounds {rounds}: use an integer >= 1")
    names = [arm.name for arm in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must differ: {names}")
    runs: list[Run] = []
    clock = time.perf_counter
    bar = tqdm(total=rounds * len(units), desc=desc, disable=not progress)
    for r in range(rounds):
        for u, unit in enumerate(units):
            k = (r * len(units) + u) % len(arms)
            for arm in arms[k:] + arms[:k]:
                sync_device(device)
                start = clock()
                rows = arm.decode(queue, unit, clock)
                sync_device(device)
                runs.append(Run(arm.name, u, r, rows, clock() - start, arm.bookkeeping_s))
            bar.update()
            if postfix:
                bar.set_postfix(postfix(runs))
    bar.close()
    return runs


@dataclass
class Divergence:
    arm: str
    prompt: int
    unit: int
    position: int | None  # first new token that differs
    top2_margin: float | None = None  # of the scores that token is chosen by (None: not computed)


def check(runs: list[Run], arms: list, references: References, margins: bool = True) -> list[Divergence]:
    """Mark every row of a checked arm identical or not to its prompt's reference; one Divergence per differing row,
    with the top-2 margin of the scores at its first differing token (near-ties: batched matmuls round differently)."""
    checked = {arm.name for arm in arms if arm.checked}
    out: list[Divergence] = []
    for run in runs:
        if run.arm not in checked:
            continue
        for row in run.rows:
            reference = references.get(row.prompt)
            row.identical = row.tokens == reference
            if not row.identical:
                pos = first_difference(row.tokens, reference)
                margin = (top2_margin(references.model, references.queue.prompts[row.prompt], reference, pos, references.sampling)
                          if margins and pos is not None and pos < len(reference) else None)
                out.append(Divergence(run.arm, row.prompt, run.unit, pos, margin))
    return out


def identical_fraction(runs: list[Run], arm: str) -> float | None:
    marks = [row.identical for run in runs if run.arm == arm for row in run.rows if row.identical is not None]
    return sum(marks) / len(marks) if marks else None


def arm_totals(runs: list[Run], arm: str) -> "Totals":
    mine = [run for run in runs if run.arm == arm]
    rows = [row for run in mine for row in run.rows]
    steps = [row.steps for row in rows]
    kept = [run.bookkeeping_s for run in mine]
    return Totals(sum(run.tokens for run in mine), sum(run.seconds for run in mine),
                  None if any(s is None for s in steps) else sum(steps), rows, [[run.tokens, run.seconds] for run in mine],
                  None if any(k is None for k in kept) else sum(kept))


@dataclass
class Totals:
    """One arm's runs added up."""

    tokens: int
    seconds: float
    steps: int | None  # None: an arm that does not count steps (HF)
    rows: list[Row] = field(default_factory=list)
    runs: list[list[float]] = field(default_factory=list)  # [tokens, seconds] of each call, in order
    bookkeeping_s: float | None = None  # admitting and retiring requests, forwards excluded (None: HF)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def tokens_per_step(self) -> float | None:
        return self.tokens / self.steps if self.steps else None
