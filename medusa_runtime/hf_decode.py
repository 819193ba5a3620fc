"""Hugging Face ``generate``: the baseline a user would otherwise run, and the reference decode every runtime row
must equal (each prompt on its own, greedy or with the runtime's keyed draws). Also the top-2 margin that explains
a divergence. This module decodes with HF only; it times nothing (harness.py does) and never runs the runtime.
"""

from __future__ import annotations

import torch
from tqdm import tqdm
from transformers import LogitsProcessorList

from .draws import KeyedSampler, keyed_gumbel, prompt_key, warp
from .sampling import SamplingConfig
from .served import per_prompt_limits


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


def hf_reference(model, prompt_ids: list[int], max_new_tokens: int, eos_token_ids: list[int], sampling: SamplingConfig) -> list[int]:
    """One prompt's own reference decode (no padding): greedy, or keyed sampling at temperature > 0."""
    return hf_generate(model, [prompt_ids], max_new_tokens, eos_token_ids, sampling, keyed=True)[0]


def hf_references(model, prompt_ids: list[list[int]], max_new_tokens: int | list[int], eos_token_ids: list[int],
                  sampling: SamplingConfig, progress: bool = True, desc: str = "references") -> list[list[int]]:
    """Every prompt's own reference decode (``hf_reference``), with a progress bar; one limit for all or one per prompt."""
    limits = per_prompt_limits(max_new_tokens, len(prompt_ids))
    return [hf_reference(model, p, n, eos_token_ids, sampling)
            for p, n in tqdm(list(zip(prompt_ids, limits)), desc=desc, disable=not progress)]


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
