"""Benchmark of a queue of requests through B slots: in-flight (continuous) batching against static batches.

All requests arrive at once (an offline burst). Each arm decodes the whole queue and is timed from its start:

- ``medusa continuous``: the runtime with the tree, a request prefilled into a slot as soon as one frees (``serve``);
- ``plain continuous``: the same scheduler with the tree switched off (the fair baseline for "switch Medusa off");
- ``medusa static``: the runtime on consecutive static batches of B requests (``harness.batches_of``: the last one
  filled up with the first requests again, whose second decode is discarded; a batch starts when the previous ends);
- ``hf static``: Hugging Face ``generate`` on the same batches, left-padded, run to the batch's largest limit and each
  row cut at its own (what a plain HF user runs; it returns a batch at once, so a request's first and last token
  arrive when its batch ends).

Requests may have different token limits (``limits``), so that the two batching modes differ: a static batch waits
for its longest row, a continuous one refills the row at once. Per arm: tokens/s over the whole queue (prefills
included), each request's latency (from the burst to its last token: queueing included) and time to first token,
as median and 90th percentile, and every request checked token for token against its own reference decode (greedy,
or keyed plain sampling). Arms run one after another, in an order rotated every round (``rounds``), so that the
machine's drift does not favour one; the loop, timing and checks are ``harness.py``'s. This module sets up the
arms and reports; it builds no trees and loads no models.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field

import torch

from .decoding import MedusaDecoder
from .harness import (HFArm, Queue, References, Run, RuntimeArm, StaticBatches, arm_totals, check, device_name,
                      identical_fraction, measure, warm_up)
from .models import dtype_name
from .sampling import SamplingConfig
from .spec import TreeSpec

ARMS = ("medusa continuous", "plain continuous", "medusa static", "hf static")


@dataclass
class ArmReport:
    arm: str
    tokens: int  # new tokens over every request and round
    seconds: float
    tokens_per_s: float
    latency_median_s: float  # from the burst to a request's last token, median over requests (and rounds)
    latency_p90_s: float
    ttft_median_s: float
    ttft_p90_s: float
    tokens_per_step: float | None  # the runtime's arms only
    identical: float | None  # requests equal to their reference decode (None: HF sampling, which draws its own)
    bookkeeping_s: float | None = None  # the runtime's time admitting and retiring requests, forwards excluded


@dataclass
class ServeReport:
    batch_size: int
    prompts: int
    rounds: int
    nodes: int
    max_new_tokens: list[int]  # each request's limit
    device: str
    dtype: str
    temperature: float
    arms: list[ArmReport]
    predicted_tokens_per_s: float | None = None  # the tree's plan at this batch size (an endless queue), if it has one
    # for continuous batching; a short burst drains at its end, so ``treeopt sweep`` predicts for the queue it measures
    divergences: list[dict] = field(default_factory=list)

    def arm(self, name: str) -> ArmReport:
        return next(a for a in self.arms if a.arm == name)

    def to_json(self) -> dict:
        return asdict(self)


def request_limits(count: int, low: int, high: int, seed: int = 0) -> list[int]:
    """Each request's token limit, drawn uniformly from [low, high] with a fixed seed (all ``high`` when low == high)."""
    import random

    if not 1 <= low <= high:
        raise ValueError(f"--min-new-tokens {low}: must be between 1 and --max-new-tokens {high}")
    rng = random.Random(seed)
    return [rng.randint(low, high) for _ in range(count)]


def percentile(values: list[float], q: float) -> float:
    """The q-quantile by linear interpolation between order statistics."""
    return float(torch.tensor(values, dtype=torch.float64).quantile(q))


def run_serve_bench(loaded, heads, tree: TreeSpec, prompt_ids: list[list[int]], limits: list[int], batch_size: int,
                    sampling: SamplingConfig | None = None, rounds: int = 1, progress: bool = True) -> ServeReport:
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: use an integer >= 1")
    if not prompt_ids:
        raise ValueError("the queue is empty: select at least one prompt")
    if batch_size > len(prompt_ids):
        raise ValueError(f"--batch-size {batch_size} is larger than the queue of {len(prompt_ids)} prompts: select more "
                         f"prompts or a smaller batch size")
    model, eos = loaded.model, loaded.eos_token_ids
    sampling = sampling or SamplingConfig()
    queue = Queue.of(prompt_ids, limits)
    medusa = MedusaDecoder(model, heads, tree, eos, sampling)
    plain = MedusaDecoder(model, None, TreeSpec([]), eos, sampling)
    medusa.check_prompts(prompt_ids, max(limits))  # a prompt past the context: one line before anything runs
    references = References(model, eos, queue, sampling)
    references.fetch(range(len(queue)), progress, "serve bench: references")
    arms = [RuntimeArm(ARMS[0], medusa, batch_size), RuntimeArm(ARMS[1], plain, batch_size),
            StaticBatches(RuntimeArm(ARMS[2], medusa), batch_size), StaticBatches(HFArm(ARMS[3], model, eos, sampling), batch_size)]
    everything = list(range(len(queue)))
    warm_up(model, arms[:2], queue, everything[:batch_size], batch_size, limit=4)
    runs = measure(arms, queue, [everything], loaded.device, rounds, progress,
                   f"serve bench ({tree.nodes} nodes, batch {batch_size})")
    divergences = check(runs, arms, references, margins=False)
    return ServeReport(batch_size, len(queue), rounds, tree.nodes, limits, device_name(loaded.device),
                       dtype_name(loaded.dtype), sampling.temperature, [_arm_report(runs, arm) for arm in arms],
                       divergences=[{"arm": d.arm, "prompt": d.prompt} for d in divergences if d.arm != "hf static"])


def _arm_report(runs: list[Run], arm) -> ArmReport:
    totals = arm_totals(runs, arm.name)
    finished, first = [r.finished_s for r in totals.rows], [r.first_s for r in totals.rows]
    return ArmReport(arm.name, totals.tokens, totals.seconds, totals.tokens_per_s, statistics.median(finished),
                     percentile(finished, 0.9), statistics.median(first), percentile(first, 0.9), totals.tokens_per_step,
                     identical_fraction(runs, arm.name), totals.bookkeeping_s)


def format_serve_report(report: ServeReport) -> str:
    lines = [f"{'arm':>18} {'tok/s':>8} {'vs hf':>6} {'latency p50':>11} {'p90':>7} {'ttft p50':>8} {'p90':>7} "
             f"{'tok/step':>8} {'same':>5} {'admit+retire':>12}"]
    hf = report.arm("hf static").tokens_per_s
    for a in report.arms:
        lines.append(f"{a.arm:>18} {a.tokens_per_s:>8.2f} {a.tokens_per_s / hf:>5.2f}x {a.latency_median_s:>10.2f}s "
                     f"{a.latency_p90_s:>6.2f}s {a.ttft_median_s:>7.2f}s {a.ttft_p90_s:>6.2f}s "
                     f"{(f'{a.tokens_per_step:.3f}' if a.tokens_per_step else '-'):>8} "
                     f"{(f'{a.identical:.2f}' if a.identical is not None else '-'):>5} "
                     f"{(f'{a.bookkeeping_s / a.seconds:.2%}' if a.bookkeeping_s is not None else '-'):>12}")
    limits = report.max_new_tokens
    lines += ["", f"{report.prompts} requests through {report.batch_size} slots, {report.rounds} round(s); tree {report.nodes} nodes; "
                  f"token limits {min(limits)}-{max(limits)}; device {report.device}, {report.dtype}; temperature {report.temperature:g}"]
    medusa, static, plain = report.arm("medusa continuous"), report.arm("medusa static"), report.arm("plain continuous")
    lines.append(f"continuous vs static (tree): {medusa.tokens_per_s / static.tokens_per_s:.2f}x tokens/s, p90 latency "
                 f"{medusa.latency_p90_s:.2f}s vs {static.latency_p90_s:.2f}s; tree vs plain (continuous): "
                 f"{medusa.tokens_per_s / plain.tokens_per_s:.2f}x"
                 + (f"; the plan predicts {report.predicted_tokens_per_s:.2f} tok/s for an endless queue" if report.predicted_tokens_per_s else ""))
    for d in report.divergences:
        lines.append(f"  divergence: {d['arm']}, prompt {d['prompt']}")
    return "\n".join(lines)


def serve_json_line(report: ServeReport) -> str:
    return json.dumps({k: v for k, v in report.to_json().items() if k != "max_new_tokens"})
