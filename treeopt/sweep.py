"""Measured tokens/s of trees of several budgets built from the same stats, side by side.

For each prompt every tree decodes in turn (round robin), so machine noise is spread evenly across the
trees; each tree's tokens/s is its total tokens over its total time. Used to check that ``build --budget
auto`` picks a size whose measured speed is close to the best measured one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from tqdm import tqdm

from medusa_runtime.bench import sync_device
from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.spec import TreeSpec


@dataclass
class SweepRow:
    label: str
    paths: int
    tokens_per_step: float
    tokens_per_s: float
    predicted_tokens_per_step: float | None  # cross-validated (what ``build`` writes as the prediction)
    in_sample_tokens_per_step: float | None  # replay on the calibration rollouts the tree was chosen on


def run_sweep(loaded, heads, trees: dict[str, TreeSpec], prompt_ids, max_new_tokens: int = 128, progress: bool = True) -> list[SweepRow]:
    decoders = {label: MedusaDecoder(loaded.model, heads if spec.paths else None, spec, loaded.eos_token_ids)
                for label, spec in trees.items()}
    for decoder in decoders.values():
        decoder.generate(prompt_ids[0], 4)  # warm-up
    totals = {label: [0, 0, 0.0] for label in trees}  # tokens, steps, seconds
    for ids in tqdm(prompt_ids, desc=f"sweep ({len(trees)} trees)", disable=not progress):
        for label, decoder in decoders.items():
            sync_device(loaded.device)
            t0 = time.perf_counter()
            result = decoder.generate(ids, max_new_tokens)
            sync_device(loaded.device)
            totals[label][0] += len(result.tokens)
            totals[label][1] += result.steps
            totals[label][2] += time.perf_counter() - t0
    return [SweepRow(label, len(trees[label].paths), t / s, t / sec, trees[label].meta.get("expected_tokens_per_step"),
                     trees[label].meta.get("in_sample_tokens_per_step"))
            for label, (t, s, sec) in totals.items()]


def format_sweep(rows: list[SweepRow]) -> str:
    best = max(r.tokens_per_s for r in rows)
    lines = [f"{'tree':>12} {'nodes':>5} {'tok/step':>8} {'predicted':>9} {'error':>6} {'in-sample':>9} {'tok/s':>7} {'vs best':>7}"]
    for r in rows:
        predicted = f"{r.predicted_tokens_per_step:.3f}" if r.predicted_tokens_per_step is not None else "-"
        error = f"{r.predicted_tokens_per_step / r.tokens_per_step - 1:+.1%}" if r.predicted_tokens_per_step is not None else "-"
        in_sample = f"{r.in_sample_tokens_per_step:.3f}" if r.in_sample_tokens_per_step is not None else "-"
        lines.append(f"{r.label:>12} {r.paths + 1:>5} {r.tokens_per_step:>8.3f} {predicted:>9} {error:>6} {in_sample:>9} "
                     f"{r.tokens_per_s:>7.2f} {r.tokens_per_s / best:>7.1%}")
    return "\n".join(lines)


def rows_json(rows: list[SweepRow]) -> list[dict]:
    return [asdict(r) for r in rows]
