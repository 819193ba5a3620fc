"""Benchmark: Hugging Face ``generate`` greedy vs the Medusa runtime on the same prompts.

For each prompt, the baseline and the runtime run back to back (so machine noise hits both alike),
and the runtime's tokens are checked against the baseline's token for token. A divergence records the
first differing position and the base model's top-2 logit margin there (near-ties are the known,
benign cause). ``tokens_per_step`` counts every forward pass that produced tokens, prefill included,
and includes the bonus token. This module measures; it does not build trees or load models.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from .decoding import MedusaDecoder, SamplingConfig
from .models import dtype_name
from .spec import TreeSpec


@dataclass
class PromptRun:
    index: int
    prompt_tokens: int
    new_tokens: int
    baseline_tokens: int
    baseline_s: float
    medusa_s: float
    steps: int
    identical: bool
    divergence: dict | None = None


@dataclass
class BenchReport:
    tokens_per_step: float
    tokens_per_s: float
    baseline_tokens_per_s: float
    speedup: float
    identical: float | None
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
    median_speedup_per_prompt: float = 0.0
    draft_vocab: int | None = None  # tokens the heads guess from (None: the whole vocabulary, or no heads)
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
def hf_greedy(model, prompt_ids: list[int], max_new_tokens: int, eos_token_ids: list[int]) -> list[int]:
    """What a user would otherwise run: ``generate`` greedy with the model's own cache."""
    device = next(model.parameters()).device
    input_ids = torch.tensor([prompt_ids], device=device)
    out = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=eos_token_ids or None,
        pad_token_id=eos_token_ids[0] if eos_token_ids else 0,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    return out[0, len(prompt_ids) :].tolist()


@torch.inference_mode()
def top2_margin(model, prompt_ids: list[int], tokens: list[int], position: int) -> float:
    """The base model's top-1 minus top-2 logit before new token ``position`` (sequential forward)."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids + tokens[:position]], device=device)
    logits = model(input_ids=ids).logits[0, -1].float()
    top = logits.topk(2).values
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
) -> BenchReport:
    model, eos = loaded.model, loaded.eos_token_ids
    sampling = sampling or SamplingConfig()
    decoder = MedusaDecoder(model, heads, tree, eos, sampling)
    if warmup:  # first calls pay for allocator and kernel warm-up; keep that out of both timings
        ref = hf_greedy(model, prompt_ids[0], 8, eos)
        decoder.generate(prompt_ids[0], 8, oracle=ref if oracle else None)
    runs: list[PromptRun] = []
    bar = tqdm(prompt_ids, desc=f"bench ({tree.nodes} nodes{', oracle' if oracle else ''})", disable=not progress)
    for i, ids in enumerate(bar):
        sync_device(loaded.device)
        t0 = time.perf_counter()
        reference = hf_greedy(model, ids, max_new_tokens, eos)
        sync_device(loaded.device)
        t1 = time.perf_counter()
        result = decoder.generate(ids, max_new_tokens, oracle=reference if oracle else None)
        sync_device(loaded.device)
        t2 = time.perf_counter()
        same = result.tokens == reference
        divergence = None
        if not same and sampling.temperature == 0:
            pos = first_difference(result.tokens, reference)
            divergence = {"prompt": i, "position": pos, "top2_margin": top2_margin(model, ids, reference, pos)}
        runs.append(PromptRun(i, len(ids), len(result.tokens), len(reference), t1 - t0, t2 - t1, result.steps, same, divergence))
        bar.set_postfix(tok_per_step=f"{sum(r.new_tokens for r in runs) / sum(r.steps for r in runs):.2f}",
                        speedup=f"{sum(r.baseline_s for r in runs) / sum(r.medusa_s for r in runs):.2f}")
    new_tokens = sum(r.new_tokens for r in runs)
    baseline_tokens = sum(r.baseline_tokens for r in runs)
    medusa_s = sum(r.medusa_s for r in runs)
    baseline_s = sum(r.baseline_s for r in runs)
    predicted = tree.meta.get("expected_tokens_per_step")
    return BenchReport(
        tokens_per_step=new_tokens / sum(r.steps for r in runs),
        tokens_per_s=new_tokens / medusa_s,
        baseline_tokens_per_s=baseline_tokens / baseline_s,
        speedup=baseline_s / medusa_s,
        identical=None if sampling.temperature > 0 else sum(r.identical for r in runs) / len(runs),
        divergences=[r.divergence for r in runs if r.divergence],
        predicted_tokens_per_step=float(predicted) if predicted is not None else None,
        prompts=len(runs),
        nodes=tree.nodes,
        device=device_name(loaded.device),
        dtype=dtype_name(loaded.dtype),
        max_new_tokens=max_new_tokens,
        oracle=oracle,
        temperature=sampling.temperature,
        median_speedup_per_prompt=statistics.median(r.baseline_s / r.medusa_s for r in runs),
        draft_vocab=None if oracle or heads is None or heads.draft_vocab is None else len(heads.draft_vocab),
        per_prompt=[asdict(r) for r in runs],
    )


def format_report(report: BenchReport) -> str:
    lines = [f"{'prompt':>6} {'in':>5} {'new':>5} {'base tok/s':>10} {'medusa tok/s':>12} {'tok/step':>8} {'same':>5}"]
    for r in report.per_prompt:
        lines.append(
            f"{r['index']:>6} {r['prompt_tokens']:>5} {r['new_tokens']:>5} {r['new_tokens'] / r['baseline_s']:>10.1f} "
            f"{r['new_tokens'] / r['medusa_s']:>12.1f} {r['new_tokens'] / r['steps']:>8.2f} {'yes' if r['identical'] else 'NO':>5}"
        )
    predicted = f"{report.predicted_tokens_per_step:.3f}" if report.predicted_tokens_per_step is not None else "n/a"
    identical = f"{report.identical:.2f}" if report.identical is not None else "n/a (sampling)"
    lines += [
        "",
        f"tree: {report.nodes} nodes{' (oracle)' if report.oracle else ''}   device: {report.device}   dtype: {report.dtype}"
        + (f"   heads guess from {report.draft_vocab} tokens" if report.draft_vocab else ""),
        f"tokens/step (bonus token included): {report.tokens_per_step:.3f}   predicted: {predicted}",
        f"baseline (HF generate): {report.baseline_tokens_per_s:.2f} tok/s   medusa: {report.tokens_per_s:.2f} tok/s",
        f"speedup: {report.speedup:.2f}x (total time)   median per prompt: {report.median_speedup_per_prompt:.2f}x   identical: {identical}",
    ]
    return "\n".join(lines)


def report_json_line(report: BenchReport) -> str:
    summary = {k: v for k, v in report.to_json().items() if k != "per_prompt"}
    return json.dumps(summary)
