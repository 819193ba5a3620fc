"""Benchmark: Hugging Face ``generate`` vs the Medusa runtime on the same prompts, at a batch size.

Prompts run in static batches of ``batch_size`` (``harness.batches_of``: the last batch is filled up with the
first prompts again, so every batch has that many rows, as on a loaded server). For each batch the baseline and
the runtime run back to back, who goes first alternating (so machine noise hits both alike); the loop, the
timing and the identity check are ``harness.py``'s. The baseline is what a user would run: ``generate`` on
the batch with left padding (at batch size 1, on the prompt alone), greedy at temperature 0 and
``do_sample=True`` with the same temperature, top-k and top-p above it. Every row of the runtime is checked
token for token against that prompt's own reference decode: ``generate`` on the prompt alone, greedy, or at
temperature > 0 with the runtime's keyed draws (``draws.KeyedSampler``: same warpers, same noise per prompt and
position, so a lossless runtime must emit exactly that text). At batch size 1 and temperature 0 the reference is
the baseline itself; otherwise it is decoded untimed. A divergence records the first differing position and the
top-2 margin of the scores the token was chosen by there (the base model's logits, or warped logits plus noise):
near-ties are the known, benign cause (batched matmuls round differently); typical acceptance diverges by design.
``tokens_per_step`` counts every forward pass that produced a row's tokens, prefill included, and
includes the bonus token. This module sets up the two arms and reports; it does not build trees or load models.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field

from .decoding import MedusaDecoder
from .harness import (HFArm, Queue, References, Run, RuntimeArm, arm_totals, batches_of, check, device_name, measure,
                      warm_up)
from .models import dtype_name
from .sampling import SamplingConfig, describe_drafts
from .spec import TreeSpec


@dataclass
class PromptRun:
    index: int
    prompt_tokens: int
    new_tokens: int
    baseline_tokens: int
    baseline_s: float  # the whole batch's time (this prompt's own at batch size 1)
    medusa_s: float
    steps: int
    identical: bool  # the runtime's row equals the prompt's own reference decode (greedy, or keyed sampling)
    divergence: dict | None = None
    batch: int = 0  # which batch of the run the row was decoded in
    baseline_identical: bool | None = True  # the baseline's row (left-padded at batch size > 1) equals it too (None: sampled)


@dataclass
class BenchReport:
    tokens_per_step: float
    tokens_per_s: float
    baseline_tokens_per_s: float
    speedup: float
    identical: float | None  # fraction of rows equal to their reference decode
    divergences: list[dict]
    predicted_tokens_per_step: float | None
    prompts: int
    nodes: int
    device: str
    dtype: str
    max_new_tokens: int
    oracle: bool
    model: str = ""
    heads: str | None = None
    tree: str | None = None
    prompt_source: str = ""
    select: str | None = None
    temperature: float = 0.0
    median_speedup_per_prompt: float = 0.0  # median over batches (over prompts at batch size 1)
    draft_vocab: int | None = None  # tokens the heads guess from (None: the whole vocabulary, or no heads)
    engine: str | None = None  # the engine whose way of running the heads was benched (bench --engine; None: this runtime's)
    batch_size: int = 1
    batches: int = 0
    baseline_identical: float | None = None  # rows where left-padded batched ``generate`` equals the prompt's own greedy decode
    acceptance: str = "greedy"  # the runtime's acceptance rule: greedy | sample | typical
    drafts: dict = field(default_factory=lambda: {"rule": "mode"})  # how the heads ordered their guesses (draft_settings)
    lossless: bool = True  # whether that rule keeps the output distribution (typical does not)
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    predicted_tokens_per_s: float | None = None  # the tree's plan for this batch size (build --budget auto --batch-size)
    per_prompt: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def run_bench(
    loaded,
    heads,
    tree: TreeSpec,
    prompt_ids: list[list[int]],
    max_new_tokens: int = 128,
    oracle: bool = False,
    sampling: SamplingConfig | None = None,
    progress: bool = True,
    warmup: bool = True,
    batch_size: int = 1,
) -> BenchReport:
    """HF ``generate`` and the runtime on each static batch (``harness.batches_of``), back to back; every row checked."""
    model, eos = loaded.model, loaded.eos_token_ids
    sampling = sampling or SamplingConfig()
    queue = Queue.of(prompt_ids, max_new_tokens)
    batches = batches_of(len(queue), batch_size)
    references = References(model, eos, queue, sampling)
    if oracle:  # the oracle decodes read the references: fetch them before anything is timed
        references.fetch(range(len(queue)), progress, "bench: references")
    baseline = HFArm("baseline", model, eos, sampling)
    medusa = RuntimeArm("medusa", MedusaDecoder(model, heads, tree, eos, sampling), oracles=references if oracle else None)
    if warmup:
        warm_up(model, [baseline, medusa], queue, batches[0], batch_size)
    runs = measure([baseline, medusa], queue, batches, loaded.device, progress=progress, postfix=_progress,
                   desc=f"bench ({tree.nodes} nodes{', oracle' if oracle else ''}, batch {batch_size}, {sampling.rule})")
    if batch_size == 1 and not sampling.sampled:
        references.adopt(runs, "baseline")  # each baseline row is then the prompt's own greedy decode
    divergences = {(d.unit, d.prompt): d for d in check(runs, [baseline, medusa], references) if d.arm == "medusa"}
    by_unit = {(run.arm, run.unit): run for run in runs}
    rows: list[PromptRun] = []
    for k in range(len(batches)):
        base, mine = by_unit["baseline", k], by_unit["medusa", k]
        for b, m in zip(base.rows, mine.rows):
            d = divergences.get((k, m.prompt))
            rows.append(PromptRun(m.prompt, len(queue.prompts[m.prompt]), len(m.tokens), len(b.tokens), base.seconds,
                                  mine.seconds, m.steps, bool(m.identical),
                                  {"prompt": d.prompt, "batch": k, "position": d.position, "top2_margin": d.top2_margin} if d else None,
                                  k, b.identical))
    return _report(loaded, heads, tree, queue, oracle, sampling, batch_size, len(batches), runs, rows)


def _progress(runs: list[Run]) -> dict:
    mine, base = arm_totals(runs, "medusa"), arm_totals(runs, "baseline")
    return {"tok_per_step": f"{mine.tokens_per_step:.2f}" if mine.steps else "-",
            "speedup": f"{statistics.median(_batch_speedups(runs)):.2f}" if mine.runs and len(base.runs) == len(mine.runs) else "-"}


def _batch_speedups(runs: list[Run]) -> list[float]:
    mine, base = arm_totals(runs, "medusa").runs, arm_totals(runs, "baseline").runs
    return [(m[0] / m[1]) / (b[0] / b[1]) for m, b in zip(mine, base)]


def _report(loaded, heads, tree: TreeSpec, queue: Queue, oracle: bool, sampling: SamplingConfig, batch_size: int,
            batches: int, runs: list[Run], rows: list[PromptRun]) -> BenchReport:
    mine, base = arm_totals(runs, "medusa"), arm_totals(runs, "baseline")
    predicted = tree.meta.get("expected_tokens_per_step")
    return BenchReport(
        tokens_per_step=mine.tokens_per_step,
        tokens_per_s=mine.tokens_per_s,
        baseline_tokens_per_s=base.tokens_per_s,
        speedup=mine.tokens_per_s / base.tokens_per_s,
        identical=sum(r.identical for r in rows) / len(rows),
        divergences=[r.divergence for r in rows if r.divergence],
        predicted_tokens_per_step=float(predicted) if predicted is not None else None,
        prompts=len(queue),
        nodes=tree.nodes,
        device=device_name(loaded.device),
        dtype=dtype_name(loaded.dtype),
        max_new_tokens=max(queue.limits),
        oracle=oracle,
        temperature=sampling.temperature,
        median_speedup_per_prompt=statistics.median(_batch_speedups(runs)),
        draft_vocab=None if oracle or heads is None or heads.draft_vocab is None else len(heads.draft_vocab),
        batch_size=batch_size,
        batches=batches,
        baseline_identical=None if sampling.sampled else sum(bool(r.baseline_identical) for r in rows) / len(rows),
        acceptance=sampling.rule,
        drafts=sampling.draft_settings(),
        lossless=sampling.lossless,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        seed=sampling.seed,
        predicted_tokens_per_s=tree.planned_tokens_per_s(batch_size, "static"),
        per_prompt=[asdict(r) for r in rows],
    )


def format_report(report: BenchReport) -> str:
    if report.batch_size == 1:
        lines = [f"{'prompt':>6} {'in':>5} {'new':>5} {'base tok/s':>10} {'medusa tok/s':>12} {'tok/step':>8} {'same':>5}"]
        for r in report.per_prompt:
            lines.append(
                f"{r['index']:>6} {r['prompt_tokens']:>5} {r['new_tokens']:>5} {r['baseline_tokens'] / r['baseline_s']:>10.1f} "
                f"{r['new_tokens'] / r['medusa_s']:>12.1f} {r['new_tokens'] / r['steps']:>8.2f} {'yes' if r['identical'] else 'NO':>5}"
            )
    else:
        lines = [f"{'batch':>5} {'prompts':>15} {'new':>5} {'base tok/s':>10} {'medusa tok/s':>12} {'tok/step':>8} {'same':>5}"]
        for k in range(report.batches):
            rows = [r for r in report.per_prompt if r["batch"] == k]
            new, base = sum(r["new_tokens"] for r in rows), sum(r["baseline_tokens"] for r in rows)
            lines.append(f"{k:>5} {','.join(str(r['index']) for r in rows):>15} {new:>5} {base / rows[0]['baseline_s']:>10.1f} "
                         f"{new / rows[0]['medusa_s']:>12.1f} {new / sum(r['steps'] for r in rows):>8.2f} "
                         f"{sum(r['identical'] for r in rows):>3}/{len(rows)}")
    predicted = f"{report.predicted_tokens_per_step:.3f}" if report.predicted_tokens_per_step is not None else "n/a"
    identical = f"{report.identical:.2f}" if report.identical is not None else "n/a"
    sampled = report.temperature > 0
    decoding = "greedy decoding (temperature 0)"
    if sampled:
        settings = SamplingConfig(report.temperature, report.top_k, report.top_p, report.seed)
        decoding = (f"sampling at {settings.describe()}, seed {report.seed}; acceptance: {report.acceptance} "
                    f"({'lossless' if report.lossless else 'LOSSY: changes the output distribution'}); "
                    f"{describe_drafts(report.drafts)}")
    batch = f"   batch size {report.batch_size} ({report.batches} batches of {report.prompts} prompts)" if report.batch_size > 1 else ""
    planned = f"   predicted: {report.predicted_tokens_per_s:.2f} tok/s" if report.predicted_tokens_per_s is not None else ""
    lines += [
        "",
        f"tree: {report.nodes} nodes{' (oracle)' if report.oracle else ''}   device: {report.device}   dtype: {report.dtype}"
        + (f"   heads guess from {report.draft_vocab} tokens" if report.draft_vocab else "") + batch,
        decoding,
        f"tokens/step (bonus token included): {report.tokens_per_step:.3f}   predicted: {predicted}",
        f"baseline (HF generate{', do_sample' if sampled else ''}{', left-padded batches' if report.batch_size > 1 else ''}): "
        f"{report.baseline_tokens_per_s:.2f} tok/s"
        f"   medusa: {report.tokens_per_s:.2f} tok/s{planned}",
        f"speedup: {report.speedup:.2f}x (total time)   median per {'batch' if report.batch_size > 1 else 'prompt'}: "
        f"{report.median_speedup_per_prompt:.2f}x   identical: {identical}"
        + (" (to keyed plain sampling with the same seed)" if sampled else "")
        + (f" (baseline's rows: {report.baseline_identical:.2f})" if report.batch_size > 1 and report.baseline_identical is not None else ""),
    ]
    for d in report.divergences:
        lines.append(f"  divergence: prompt {d['prompt']} (batch {d['batch']}) at new token {d['position']}, "
                     f"top-2 margin of the {'sampling scores' if sampled else 'base logits'} there {d['top2_margin']:.4f}")
    return "\n".join(lines)


def report_json_line(report: BenchReport) -> str:
    summary = {k: v for k, v in report.to_json().items() if k != "per_prompt"}
    return json.dumps(summary)
