"""Measured tokens/s of trees of several budgets built from the same stats, side by side, at a batch size.

Static batches (the default): for each batch of prompts (``harness.batches_of``: the last batch is filled up with the
first prompts again) every tree decodes it in turn (round robin), so machine noise is spread evenly across the
trees; each tree's tokens/s is its total tokens over its total time. Continuous batches: every tree serves the whole
queue through ``batch_size`` slots (``MedusaDecoder.serve``), the trees one after another, ``rounds`` times with the
order rotated (the planned tree's ratio to each other tree then has an interval over rounds). Used to check that ``build
--budget auto`` (and ``plan``, per batch size) picks a size whose measured speed is close to the best measured one
(the planned tree beside its two neighbouring budgets and plain decoding), and that its predicted tokens/s (``plan.py``
at this batch size, for this very queue) is close to the measured one. With references (each prompt's own decode),
every tree's outputs are checked token for token. Trees decode at the sampling settings their stats were calibrated
at (greedy, or sample-and-match with keyed draws, so every tree decodes the very same text and only their speeds
differ). A tree that appears twice (the planned one is also a listed budget) is decoded once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.hf_decode import hf_references
from medusa_runtime.harness import Queue, References, RuntimeArm, arm_totals, batches_of, check, identical_fraction, measure, warm_up
from medusa_runtime.files import read_json_object
from medusa_runtime.sampling import SamplingConfig
from medusa_runtime.spec import TreeSpec

from .design import TreeRequest, design_tree
from .plan import budget_tokens_per_s, plan_batches, planned_tree
from .stats import CalibrationStats
from .tuning import BatchLatency, LatencyProfile


@dataclass
class SweepRow:
    label: str
    paths: int
    tokens_per_step: float
    tokens_per_s: float
    predicted_tokens_per_step: float | None  # cross-validated (what ``build`` writes as the prediction)
    in_sample_tokens_per_step: float | None  # replay on the calibration rollouts the tree was chosen on
    predicted_tokens_per_s: float | None = None  # from the latency profile at this batch size, for this queue (plan.py)
    batch_size: int = 1
    identical: float | None = None  # outputs equal to their prompt's reference decode (None: no references)
    measured_as: str | None = None  # the label whose run this row shares (the same tree listed twice)
    runs: list[list[float]] | None = None  # [tokens, seconds] of each batch (static) or of the whole queue (continuous), per round


@dataclass
class SweepTrees:
    """What one batch size of a sweep decodes: label -> tree and its predicted tokens/s; the planned tree's label."""

    batch_size: int
    trees: dict[str, TreeSpec]
    predicted_tokens_per_s: dict[str, float]
    auto_label: str


def sweep_trees(stats: CalibrationStats, latencies: dict[int, LatencyProfile], budgets: list[int], batch_sizes: list[int],
                batching: str = "static", queue: int | None = None, neighbours: bool = True) -> list[SweepTrees]:
    """Per batch size: plain decoding ("empty"), ``budgets``, the plan's tree ("auto (n)") and, with ``neighbours``,
    the budgets one below and one above the planned one. Predictions: ``plan.py`` at that batch size (continuous:
    a burst of ``queue`` requests). Raises BuildError or ValueError for budgets that cannot be built."""
    model = BatchLatency(latencies).typical()  # predictions by medians, as the plan's (plan.py)
    request = TreeRequest(None)
    plan_made = plan_batches(stats, latencies, request, batching)
    designed: dict = {}
    out = []
    for b in batch_sizes:
        auto = planned_tree(stats, plan_made, request, b)
        paths = len(auto.paths)
        wanted = sorted({n for n in budgets if n > 0} | ({n for n in (paths - 1, paths + 1) if n > 0} if neighbours else set()))
        label = f"auto ({paths})"
        budget_of = {"empty": 0, **{f"budget {n}": n for n in wanted}, label: paths}  # label -> paths
        for n in set(budget_of.values()) - {0} - designed.keys():
            designed[n] = design_tree(stats, TreeRequest(n))
        trees = {name: auto if name == label else designed[n].spec if n else TreeSpec([]) for name, n in budget_of.items()}
        predicted = {name: budget_tokens_per_s(stats, n, b, model, batching, designed.get(n), queue) for name, n in budget_of.items()}
        out.append(SweepTrees(b, trees, predicted, label))
    return out


def run_sweep(loaded, heads, trees: dict[str, TreeSpec], prompt_ids, max_new_tokens: int = 128, progress: bool = True,
              batch_size: int = 1, predicted_tokens_per_s: dict[str, float] | None = None,
              sampling: SamplingConfig | None = None, batching: str = "static",
              references: list[list[int]] | None = None, rounds: int = 1) -> list[SweepRow]:
    """``predicted_tokens_per_s``: per tree label, what the latency profile predicts at this batch size (``plan.py``);
    ``batching``: static | continuous; ``references``: per prompt, the tokens every tree must decode; ``rounds``: times
    every batch (continuous: the whole queue) is decoded by every tree, the trees' order rotated each time."""
    distinct: dict[str, str] = {}  # label -> the first label with the same tree
    for label, spec in trees.items():
        distinct[label] = next(first for first, other in trees.items() if other.paths == spec.paths)
    slots = batch_size if batching == "continuous" else None
    arms = [RuntimeArm(label, MedusaDecoder(loaded.model, heads if spec.paths else None, spec, loaded.eos_token_ids, sampling), slots)
            for label, spec in trees.items() if distinct[label] == label]
    queue = Queue.of(prompt_ids, max_new_tokens)
    batches = batches_of(len(queue), batch_size)
    # continuous: one unit holds the whole queue, which each tree serves through batch_size slots
    units = [list(range(len(queue)))] if batching == "continuous" else batches
    warm_up(loaded.model, arms, queue, batches[0], batch_size, limit=4)
    runs = measure(arms, queue, units, loaded.device, rounds, progress, f"sweep ({len(arms)} trees, batch {batch_size}, {batching})")
    if references is not None:
        check(runs, arms, References(loaded.model, loaded.eos_token_ids, queue, sampling or SamplingConfig(), references),
              margins=False)
    out = []
    for label, spec in trees.items():
        totals = arm_totals(runs, distinct[label])
        out.append(SweepRow(label, len(spec.paths), totals.tokens_per_step, totals.tokens_per_s, spec.meta.get("expected_tokens_per_step"),
                            spec.meta.get("in_sample_tokens_per_step"), (predicted_tokens_per_s or {}).get(label), batch_size,
                            identical_fraction(runs, distinct[label]) if references is not None else None,
                            distinct[label] if distinct[label] != label else None, totals.runs))
    return out


def sweep_batch_sizes(loaded, heads, planned: list[SweepTrees], prompt_ids: list[list[int]], max_new_tokens: int,
                      sampling: SamplingConfig, batching: str, check: bool = True, rounds: int = 1,
                      on_batch_size: Callable[[dict, list[SweepRow]], None] | None = None) -> list[dict]:
    """``run_sweep`` at every planned batch size on the same prompts, checked against each prompt's own decode (computed
    once) when ``check``; one ``sweep_summary`` per batch size, each also handed to ``on_batch_size`` as it is done."""
    references = None
    if check:
        references = hf_references(loaded.model, prompt_ids, max_new_tokens, loaded.eos_token_ids, sampling,
                                   desc="sweep: reference decodes")
    results = []
    for plan_b in planned:
        rows = run_sweep(loaded, heads, plan_b.trees, prompt_ids, max_new_tokens, batch_size=plan_b.batch_size,
                         predicted_tokens_per_s=plan_b.predicted_tokens_per_s, sampling=sampling, batching=batching,
                         references=references, rounds=rounds)
        results.append(sweep_summary(plan_b, rows, batching))
        if on_batch_size:
            on_batch_size(results[-1], rows)
    return results


def paired_ratio(mine: list[list[float]], other: list[list[float]], resamples: int = 2000, seed: int = 0) -> dict:
    """tokens/s of ``mine`` over ``other``, decoded on the same batches ([tokens, seconds] each, same order), with a
    bootstrap 90% interval over the batches (how far the machine's noise moves the ratio); one batch: no interval."""
    import random

    def ratio(idx: list[int]) -> float:
        return (sum(mine[i][0] for i in idx) / sum(mine[i][1] for i in idx)) / (sum(other[i][0] for i in idx) / sum(other[i][1] for i in idx))

    every = list(range(len(mine)))
    if len(every) < 2:
        return {"ratio": round(ratio(every), 4), "low": None, "high": None}
    rng = random.Random(seed)
    draws = sorted(ratio([rng.choice(every) for _ in every]) for _ in range(resamples))
    return {"ratio": round(ratio(every), 4), "low": round(draws[int(0.05 * resamples)], 4), "high": round(draws[int(0.95 * resamples) - 1], 4)}


def sweep_summary(planned: SweepTrees, rows: list[SweepRow], batching: str) -> dict:
    """One batch size's JSON: the planned tree against the best other tree measured, and every row."""
    auto = next(r for r in rows if r.label == planned.auto_label)
    others = [r for r in rows if r.label != planned.auto_label]
    best = max(r.tokens_per_s for r in others)
    identical = [r.identical for r in rows if r.identical is not None]
    return {"batch_size": planned.batch_size, "batching": batching, "auto_paths": auto.paths,
            "auto_tokens_per_s": round(auto.tokens_per_s, 3),
            "auto_predicted_tokens_per_s": None if auto.predicted_tokens_per_s is None else round(auto.predicted_tokens_per_s, 3),
            "best_budget_tokens_per_s": round(best, 3), "auto_vs_best": round(auto.tokens_per_s / best, 4),
            "identical": min(identical) if identical else None,
            # the planned tree against each other tree, batch by batch (static batches: with the noise's interval)
            "auto_vs": {r.label: paired_ratio(auto.runs, r.runs) for r in others if r.runs and auto.runs and r.measured_as != auto.label
                        and auto.measured_as != r.label},
            "rows": rows_json(rows)}


def format_sweep(rows: list[SweepRow]) -> str:
    best = max(r.tokens_per_s for r in rows)
    lines = [f"{'tree':>12} {'nodes':>5} {'tok/step':>8} {'predicted':>9} {'error':>6} {'in-sample':>9} {'tok/s':>7} "
             f"{'pred tok/s':>10} {'error':>6} {'vs best':>7} {'identical':>9}"]
    for r in rows:
        predicted = f"{r.predicted_tokens_per_step:.3f}" if r.predicted_tokens_per_step is not None else "-"
        error = f"{r.predicted_tokens_per_step / r.tokens_per_step - 1:+.1%}" if r.predicted_tokens_per_step is not None else "-"
        in_sample = f"{r.in_sample_tokens_per_step:.3f}" if r.in_sample_tokens_per_step is not None else "-"
        rate = f"{r.predicted_tokens_per_s:.2f}" if r.predicted_tokens_per_s is not None else "-"
        rate_error = f"{r.predicted_tokens_per_s / r.tokens_per_s - 1:+.1%}" if r.predicted_tokens_per_s is not None else "-"
        same = f"{r.identical:.2f}" if r.identical is not None else "-"
        lines.append(f"{r.label:>12} {r.paths + 1:>5} {r.tokens_per_step:>8.3f} {predicted:>9} {error:>6} {in_sample:>9} "
                     f"{r.tokens_per_s:>7.2f} {rate:>10} {rate_error:>6} {r.tokens_per_s / best:>7.1%} {same:>9}"
                     + (f"  (decoded once, as {r.measured_as})" if r.measured_as else ""))
    return "\n".join(lines)


def format_auto_vs(summary: dict) -> str:
    """One line: the planned tree's tokens/s over each other tree's, with the batches' 90% interval where there is one."""
    parts = []
    for label, r in summary["auto_vs"].items():
        spread = f" [{r['low']:.3f}, {r['high']:.3f}]" if r["low"] is not None else ""
        parts.append(f"{label} {r['ratio']:.3f}x{spread}")
    return "planned tree vs " + ("; ".join(parts) if parts else "nothing else measured")


def rows_json(rows: list[SweepRow]) -> list[dict]:
    return [asdict(r) for r in rows]


def measured_points(path) -> dict[int, dict[str, float]]:
    """batch size -> {"medusa": the auto tree's tok/s, "plain": plain decoding's, and where the sweep predicted them
    "medusa_predicted", "plain_predicted"}, read back from a sweep's --json output (either layout); ValueError naming
    the file otherwise."""
    fix = "pass the --json output of 'treeopt sweep'"
    doc = read_json_object(path, "sweep", fix)
    try:
        points = {}
        for batch in doc.get("batches", [doc]):
            rows = {row["label"]: row for row in batch["rows"]}
            auto = next(row for label, row in rows.items() if label.startswith("auto"))
            point = {"medusa": float(auto["tokens_per_s"]), "plain": float(rows["empty"]["tokens_per_s"])}
            if auto.get("predicted_tokens_per_s") and rows["empty"].get("predicted_tokens_per_s"):
                point.update(medusa_predicted=float(auto["predicted_tokens_per_s"]),
                             plain_predicted=float(rows["empty"]["predicted_tokens_per_s"]))
            points[int(batch.get("batch_size", 1))] = point
    except (KeyError, TypeError, ValueError, StopIteration) as err:
        raise ValueError(f"{path}: not a sweep result ({type(err).__name__}: {err}); {fix}") from None
    return points
