"""Measured tokens/s of trees of several budgets built from the same stats, side by side, at a batch size.

Static batches (the default): for each batch of prompts (``bench.batches_of``: the last batch is filled up with the
first prompts again) every tree decodes it in turn (round robin), so machine noise is spread evenly across the
trees; each tree's tokens/s is its total tokens over its total time. Continuous batches: every tree serves the whole
queue through ``batch_size`` slots (``MedusaDecoder.serve``), the trees one after another. Used to check that ``build --budget auto``
(and ``plan``, per batch size) picks a size whose measured speed is close to the best measured one, and
that its predicted tokens/s (from the latency profile at that batch size) is close to the measured one.
Trees decode at the sampling settings their stats were calibrated at (greedy, or sample-and-match with keyed
draws, so every tree decodes the very same text and only their speeds differ).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from tqdm import tqdm

from medusa_runtime.bench import batches_of, sync_device
from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.files import read_json_object
from medusa_runtime.sampling import SamplingConfig
from medusa_runtime.spec import TreeSpec


@dataclass
class SweepRow:
    label: str
    paths: int
    tokens_per_step: float
    tokens_per_s: float
    predicted_tokens_per_step: float | None  # cross-validated (what ``build`` writes as the prediction)
    in_sample_tokens_per_step: float | None  # replay on the calibration rollouts the tree was chosen on
    predicted_tokens_per_s: float | None = None  # from the latency profile at this batch size (plan.py)
    batch_size: int = 1


def run_sweep(loaded, heads, trees: dict[str, TreeSpec], prompt_ids, max_new_tokens: int = 128, progress: bool = True,
              batch_size: int = 1, predicted_tokens_per_s: dict[str, float] | None = None,
              sampling: SamplingConfig | None = None, batching: str = "static") -> list[SweepRow]:
    """``predicted_tokens_per_s``: per tree label, what the latency profile predicts at this batch size (``plan.py``);
    ``batching``: static | continuous."""
    decoders = {label: MedusaDecoder(loaded.model, heads if spec.paths else None, spec, loaded.eos_token_ids, sampling)
                for label, spec in trees.items()}
    batches = [[prompt_ids[i] for i in indices] for indices in batches_of(len(prompt_ids), batch_size)]
    for decoder in decoders.values():
        decoder.generate_batch(batches[0], 4)  # warm-up
    totals = {label: [0, 0, 0.0] for label in trees}  # tokens, steps (summed over rows), seconds
    # continuous: one "batch" holds the whole queue, which each tree serves through batch_size slots
    queues = [prompt_ids] if batching == "continuous" else batches
    slots = batch_size if batching == "continuous" else None
    for rows in tqdm(queues, desc=f"sweep ({len(trees)} trees, batch {batch_size}, {batching})", disable=not progress):
        for label, decoder in decoders.items():
            sync_device(loaded.device)
            t0 = time.perf_counter()
            results = decoder.serve(rows, max_new_tokens, slots)
            sync_device(loaded.device)
            totals[label][0] += sum(len(r.tokens) for r in results)
            totals[label][1] += sum(r.steps for r in results)
            totals[label][2] += time.perf_counter() - t0
    return [SweepRow(label, len(trees[label].paths), t / s, t / sec, trees[label].meta.get("expected_tokens_per_step"),
                     trees[label].meta.get("in_sample_tokens_per_step"),
                     (predicted_tokens_per_s or {}).get(label), batch_size)
            for label, (t, s, sec) in totals.items()]


def format_sweep(rows: list[SweepRow]) -> str:
    best = max(r.tokens_per_s for r in rows)
    lines = [f"{'tree':>12} {'nodes':>5} {'tok/step':>8} {'predicted':>9} {'error':>6} {'in-sample':>9} {'tok/s':>7} "
             f"{'pred tok/s':>10} {'error':>6} {'vs best':>7}"]
    for r in rows:
        predicted = f"{r.predicted_tokens_per_step:.3f}" if r.predicted_tokens_per_step is not None else "-"
        error = f"{r.predicted_tokens_per_step / r.tokens_per_step - 1:+.1%}" if r.predicted_tokens_per_step is not None else "-"
        in_sample = f"{r.in_sample_tokens_per_step:.3f}" if r.in_sample_tokens_per_step is not None else "-"
        rate = f"{r.predicted_tokens_per_s:.2f}" if r.predicted_tokens_per_s is not None else "-"
        rate_error = f"{r.predicted_tokens_per_s / r.tokens_per_s - 1:+.1%}" if r.predicted_tokens_per_s is not None else "-"
        lines.append(f"{r.label:>12} {r.paths + 1:>5} {r.tokens_per_step:>8.3f} {predicted:>9} {error:>6} {in_sample:>9} "
                     f"{r.tokens_per_s:>7.2f} {rate:>10} {rate_error:>6} {r.tokens_per_s / best:>7.1%}")
    return "\n".join(lines)


def rows_json(rows: list[SweepRow]) -> list[dict]:
    return [asdict(r) for r in rows]


def measured_points(path) -> dict[int, dict[str, float]]:
    """batch size -> {"medusa": the auto tree's tok/s, "plain": the empty tree's}, read back from a sweep's --json
    output (either layout); ValueError naming the file otherwise."""
    fix = "pass the --json output of 'treeopt sweep'"
    doc = read_json_object(path, "sweep", fix)
    try:
        points = {}
        for batch in doc.get("batches", [doc]):
            rows = {row["label"]: row for row in batch["rows"]}
            auto = next(row for label, row in rows.items() if label.startswith("auto"))
            points[int(batch.get("batch_size", 1))] = {"medusa": float(auto["tokens_per_s"]), "plain": float(rows["empty"]["tokens_per_s"])}
    except (KeyError, TypeError, ValueError, StopIteration) as err:
        raise ValueError(f"{path}: not a sweep result ({type(err).__name__}: {err}); {fix}") from None
    return points
