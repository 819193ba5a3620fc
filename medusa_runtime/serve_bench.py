"""Benchmark of a queue of requests through B slots: in-flight (continuous) batching against static batches.

All requests arrive at once (an offline burst). Each arm decodes the whole queue and is timed from its start:

- ``medusa continuous``: the runtime with the tree, a request prefilled into a slot as soon as one frees (``serve``);
- ``plain continuous``: the same scheduler with the tree switched off (the fair baseline for "switch Medusa off");
- ``medusa static``: the runtime on consecutive batches of B requests (a batch starts when the previous one ends);
- ``hf static``: Hugging Face ``generate`` on the same batches, left-padded, run to the batch's largest limit and each
  row cut at its own (what a plain HF user runs; it returns a batch at once, so a request's first and last token
  arrive when its batch ends).

Requests may have different token limits (``limits``), so that the two batching modes differ: a static batch waits
for its longest row, a continuous one refills the row at once. Per arm: tokens/s over the whole queue (prefills
included), each request's latency (from the burst to its last token: queueing included) and time to first token,
as median and 90th percentile, and every request checked token for token against its own reference decode (greedy,
or keyed plain sampling). Arms run one after another, in an order rotated every round (``rounds``), so that the
machine's drift does not favour one. This module measures; it builds no trees and loads no models.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from .bench import device_name, hf_generate, hf_references, sync_device
from .decoding import MedusaDecoder, SamplingConfig
from .layout import prepare_kernels
from .models import dtype_name
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
    medusa = MedusaDecoder(model, heads, tree, eos, sampling)
    plain = MedusaDecoder(model, None, TreeSpec([]), eos, sampling)
    medusa.check_prompts(prompt_ids, max(limits))  # a prompt past the context: one line before anything runs
    references = hf_references(model, prompt_ids, limits, eos, sampling, progress, "serve bench: references")
    count = len(prompt_ids)
    batches = [list(range(s, min(s + batch_size, count))) for s in range(0, count, batch_size)]  # the last one may be short
    prepare_kernels(model, range(1, batch_size + 1))  # HF generate's row counts (the runtime's: its prefills)
    medusa.serve(prompt_ids[:batch_size], 4, batch_size)  # warm-up
    plain.serve(prompt_ids[:batch_size], 4, batch_size)
    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}  # per request and round: tokens, steps, finished, first
    seconds = {arm: 0.0 for arm in ARMS}
    clock = time.perf_counter

    def timed(run) -> tuple[list[dict], float]:
        sync_device(loaded.device)
        start = clock()
        rows = run(start)
        sync_device(loaded.device)
        return rows, clock() - start

    def served(decoder: MedusaDecoder):
        def run(start: float) -> list[dict]:
            out = decoder.serve(prompt_ids, limits, batch_size, clock=clock)
            return [{"tokens": r.tokens, "steps": r.steps, "finished": r.finished_s, "first": r.first_token_s} for r in out]
        return run

    def static_medusa(start: float) -> list[dict]:
        rows: dict[int, dict] = {}
        for batch in batches:
            offset = clock() - start
            out = medusa.serve([prompt_ids[i] for i in batch], [limits[i] for i in batch], clock=clock)
            for i, r in zip(batch, out):
                rows[i] = {"tokens": r.tokens, "steps": r.steps, "finished": offset + r.finished_s, "first": offset + r.first_token_s}
        return [rows[i] for i in range(len(prompt_ids))]

    def static_hf(start: float) -> list[dict]:
        rows: dict[int, dict] = {}
        for batch in batches:
            out = hf_generate(model, [prompt_ids[i] for i in batch], max(limits[i] for i in batch), eos, sampling)
            done = clock() - start
            for i, tokens in zip(batch, out):
                rows[i] = {"tokens": tokens[: limits[i]], "steps": None, "finished": done, "first": done}
        return [rows[i] for i in range(len(prompt_ids))]

    runs = {"medusa continuous": served(medusa), "plain continuous": served(plain), "medusa static": static_medusa,
            "hf static": static_hf}
    bar = tqdm(total=rounds * len(ARMS), desc=f"serve bench ({tree.nodes} nodes, batch {batch_size})", disable=not progress)
    for k in range(rounds):
        for arm in ARMS[k % len(ARMS):] + ARMS[: k % len(ARMS)]:  # rotated: no arm always runs first
            rows, secs = timed(runs[arm])
            results[arm] += rows
            seconds[arm] += secs
            bar.update()
    bar.close()
    arms, divergences = [], []
    for arm in ARMS:
        rows = results[arm]
        same = [r["tokens"] == references[i % count] for i, r in enumerate(rows)]
        if arm != "hf static":  # HF's sampled rows are draws of their own, not the keyed reference
            divergences += [{"arm": arm, "prompt": i % count} for i, ok in enumerate(same) if not ok]
        tokens = sum(len(r["tokens"]) for r in rows)
        steps = sum(r["steps"] for r in rows) if rows[0]["steps"] is not None else None
        arms.append(ArmReport(
            arm, tokens, seconds[arm], tokens / seconds[arm],
            statistics.median(r["finished"] for r in rows), percentile([r["finished"] for r in rows], 0.9),
            statistics.median(r["first"] for r in rows), percentile([r["first"] for r in rows], 0.9),
            tokens / steps if steps else None, None if arm == "hf static" and sampling.sampled else sum(same) / len(same)))
    return ServeReport(batch_size, len(prompt_ids), rounds, tree.nodes, limits, device_name(loaded.device),
                       dtype_name(loaded.dtype), sampling.temperature, arms, divergences=divergences)


def format_serve_report(report: ServeReport) -> str:
    lines = [f"{'arm':>18} {'tok/s':>8} {'vs hf':>6} {'latency p50':>11} {'p90':>7} {'ttft p50':>8} {'p90':>7} "
             f"{'tok/step':>8} {'same':>5}"]
    hf = report.arm("hf static").tokens_per_s
    for a in report.arms:
        lines.append(f"{a.arm:>18} {a.tokens_per_s:>8.2f} {a.tokens_per_s / hf:>5.2f}x {a.latency_median_s:>10.2f}s "
                     f"{a.latency_p90_s:>6.2f}s {a.ttft_median_s:>7.2f}s {a.ttft_p90_s:>6.2f}s "
                     f"{(f'{a.tokens_per_step:.3f}' if a.tokens_per_step else '-'):>8} "
                     f"{(f'{a.identical:.2f}' if a.identical is not None else '-'):>5}")
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
