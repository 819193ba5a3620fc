"""Benchmark: Hugging Face ``generate`` vs the Medusa runtime on the same prompts, at a batch size.

Prompts run in batches of ``batch_size`` (the last batch is filled up with the first prompts again, so
every batch has that many rows, as on a loaded server). For each batch the baseline and the runtime run
back to back (so machine noise hits both alike). The baseline is what a user would run: ``generate`` on
the batch with left padding (at batch size 1, on the prompt alone), greedy at temperature 0 and
``do_sample=True`` with the same temperature, top-k and top-p above it. Every row of the runtime is checked
token for token against that prompt's own reference decode: ``generate`` on the prompt alone, greedy, or at
temperature > 0 with the runtime's keyed draws (``draws.KeyedSampler``: same warpers, same noise per prompt and
position, so a lossless runtime must emit exactly that text). At batch size 1 and temperature 0 the reference is
the baseline itself; otherwise it is decoded untimed. A divergence records the first differing position and the
top-2 margin of the scores the token was chosen by there (the base model's logits, or warped logits plus noise):
near-ties are the known, benign cause (batched matmuls round differently); typical acceptance diverges by design.
``tokens_per_step`` counts every forward pass that produced a row's tokens, prefill included, and
includes the bonus token. This module measures; it does not build trees or load models.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from transformers import LogitsProcessorList

from .decoding import MedusaDecoder, SamplingConfig
from .sampling import describe_drafts
from .draws import KeyedSampler, keyed_gumbel, prompt_key, warp
from .layout import prepare_kernels
from .models import dtype_name
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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def hf_generate(model, prompts: list[list[int]], max_new_tokens: int, eos_token_ids: list[int],
                sampling: SamplingConfig | None = None, keyed: bool = False) -> list[list[int]]:
    """What a user would otherwise run: ``generate`` with the model's own cache, the prompts left-padded to one
    batch: greedy, or at temperature > 0 ``do_sample=True`` with the same warpers (seeded from ``sampling.seed``
    without touching the global generator). ``keyed``: plain sampling with the runtime's keyed draws instead (the
    reference a lossless runtime must equal). Each row is cut after its first EOS (``generate`` pads finished rows)."""
    sampling = sampling or SamplingConfig()
    device = next(model.parameters()).device
    pad = eos_token_ids[0] if eos_token_ids else 0
    longest = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts], device=device)  # [B, L]
    attention_mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device=device)
    common = dict(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                  eos_token_id=eos_token_ids or None, pad_token_id=pad)
    if not sampling.sampled or keyed:
        processors = LogitsProcessorList([KeyedSampler(sampling, prompts, longest)] if sampling.sampled else [])
        out = model.generate(**common, do_sample=False, temperature=None, top_p=None, top_k=None, logits_processor=processors)
    else:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(sampling.seed)
            out = model.generate(**common, do_sample=True, temperature=sampling.temperature, top_k=sampling.top_k,
                                 top_p=sampling.top_p)
    rows = []
    eos = set(eos_token_ids)
    for row in out[:, longest:].tolist():
        end = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:end])
    return rows


def hf_greedy(model, prompt_ids: list[int], max_new_tokens: int, eos_token_ids: list[int]) -> list[int]:
    """One prompt's own greedy decode with ``generate`` (no padding)."""
    return hf_generate(model, [prompt_ids], max_new_tokens, eos_token_ids)[0]


def hf_reference(model, prompt_ids: list[int], max_new_tokens: int, eos_token_ids: list[int], sampling: SamplingConfig) -> list[int]:
    """One prompt's own reference decode (no padding): greedy, or keyed sampling at temperature > 0."""
    return hf_generate(model, [prompt_ids], max_new_tokens, eos_token_ids, sampling, keyed=True)[0]


def hf_references(model, prompt_ids: list[list[int]], max_new_tokens: int | list[int], eos_token_ids: list[int],
                  sampling: SamplingConfig, progress: bool = True, desc: str = "references") -> list[list[int]]:
    """Every prompt's own reference decode (``hf_reference``), with a progress bar; one limit for all or one per prompt."""
    limits = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(prompt_ids)
    return [hf_reference(model, p, n, eos_token_ids, sampling)
            for p, n in tqdm(list(zip(prompt_ids, limits)), desc=desc, disable=not progress)]


def batches_of(count: int, batch_size: int) -> list[list[int]]:
    """Prompt indices per batch: consecutive prompts, the last batch filled up with the first prompts again."""
    if count < 1 or batch_size < 1:
        raise ValueError(f"need at least one prompt and a batch size >= 1 (got {count} prompts, batch size {batch_size})")
    batches = -(-count // batch_size)
    return [[(b * batch_size + i) % count for i in range(batch_size)] for b in range(batches)]


@torch.inference_mode()
def top2_margin(model, prompt_ids: list[int], tokens: list[int], position: int, sampling: SamplingConfig | None = None) -> float:
    """Top-1 minus top-2 of the scores new token ``position`` is chosen by (sequential forward): the base model's
    logits, or at temperature > 0 its warped logits plus that position's keyed noise."""
    sampling = sampling or SamplingConfig()
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids + tokens[:position]], device=device)
    scores = model(input_ids=ids).logits[0, -1].float()
    if sampling.sampled:
        noise = keyed_gumbel(sampling.seed, prompt_key(prompt_ids), len(prompt_ids) + position, scores.shape[-1])
        scores = warp(scores, sampling) + noise.to(device)
    top = scores.topk(2).values
    return float(top[0] - top[1])


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


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
    model, eos = loaded.model, loaded.eos_token_ids
    sampling = sampling or SamplingConfig()
    decoder = MedusaDecoder(model, heads, tree, eos, sampling)
    batches = batches_of(len(prompt_ids), batch_size)
    if warmup:  # first calls pay for allocator and kernel warm-up; keep that out of both timings
        prepare_kernels(model, range(1, batch_size + 1))  # HF generate's row counts (the runtime's: its prefill)
        first = [prompt_ids[i] for i in batches[0]]
        refs = hf_generate(model, first, 8, eos)
        decoder.generate_batch(first, 8, oracles=refs if oracle else None)
    own: dict[int, list[int]] = {}  # each prompt's own reference decode (at batch size 1, greedy: the baseline itself)
    baseline_is_reference = batch_size == 1 and not sampling.sampled
    runs: list[PromptRun] = []
    batch_seconds: list[tuple[float, float]] = []  # (baseline, runtime) per batch
    batch_speedups = []
    bar = tqdm(batches, desc=f"bench ({tree.nodes} nodes{', oracle' if oracle else ''}, batch {batch_size}, {sampling.rule})",
               disable=not progress)
    for k, indices in enumerate(bar):
        rows = [prompt_ids[i] for i in indices]
        if not baseline_is_reference:
            for i in indices:
                if i not in own:  # untimed
                    own[i] = hf_reference(model, prompt_ids[i], max_new_tokens, eos, sampling)
        sync_device(loaded.device)
        t0 = time.perf_counter()
        baseline = hf_generate(model, rows, max_new_tokens, eos, sampling)
        sync_device(loaded.device)
        t1 = time.perf_counter()
        if baseline_is_reference:
            own[indices[0]] = baseline[0]
        references = [own[i] for i in indices]
        results = decoder.generate_batch(rows, max_new_tokens, oracles=references if oracle else None)
        sync_device(loaded.device)
        t2 = time.perf_counter()
        for i, ids, result, reference, base in zip(indices, rows, results, references, baseline):
            same = result.tokens == reference
            divergence = None
            if not same:
                pos = first_difference(result.tokens, reference)
                divergence = {"prompt": i, "batch": k, "position": pos, "top2_margin": top2_margin(model, ids, reference, pos, sampling)}
            runs.append(PromptRun(i, len(ids), len(result.tokens), len(base), t1 - t0, t2 - t1, result.steps, same, divergence,
                                  k, None if sampling.sampled else base == reference))
        batch_seconds.append((t1 - t0, t2 - t1))
        batch_speedups.append((sum(len(r.tokens) for r in results) / (t2 - t1)) / (sum(map(len, baseline)) / (t1 - t0)))
        bar.set_postfix(tok_per_step=f"{sum(r.new_tokens for r in runs) / sum(r.steps for r in runs):.2f}",
                        speedup=f"{statistics.median(batch_speedups):.2f}")
    new_tokens = sum(r.new_tokens for r in runs)
    baseline_tokens = sum(r.baseline_tokens for r in runs)
    baseline_s = sum(b for b, _ in batch_seconds)
    medusa_s = sum(m for _, m in batch_seconds)
    predicted = tree.meta.get("expected_tokens_per_step")
    planned = tree.planned_tokens_per_s(batch_size, "static")
    tokens_per_s, baseline_tokens_per_s = new_tokens / medusa_s, baseline_tokens / baseline_s
    return BenchReport(
        tokens_per_step=new_tokens / sum(r.steps for r in runs),
        tokens_per_s=tokens_per_s,
        baseline_tokens_per_s=baseline_tokens_per_s,
        speedup=tokens_per_s / baseline_tokens_per_s,
        identical=sum(r.identical for r in runs) / len(runs),
        divergences=[r.divergence for r in runs if r.divergence],
        predicted_tokens_per_step=float(predicted) if predicted is not None else None,
        prompts=len(prompt_ids),
        nodes=tree.nodes,
        device=device_name(loaded.device),
        dtype=dtype_name(loaded.dtype),
        max_new_tokens=max_new_tokens,
        oracle=oracle,
        temperature=sampling.temperature,
        median_speedup_per_prompt=statistics.median(batch_speedups),
        draft_vocab=None if oracle or heads is None or heads.draft_vocab is None else len(heads.draft_vocab),
        batch_size=batch_size,
        batches=len(batches),
        baseline_identical=None if sampling.sampled else sum(r.baseline_identical for r in runs) / len(runs),
        acceptance=sampling.rule,
        drafts=sampling.draft_settings(),
        lossless=sampling.lossless,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        seed=sampling.seed,
        predicted_tokens_per_s=planned,
        per_prompt=[asdict(r) for r in runs],
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
