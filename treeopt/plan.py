"""Which tree for which batch size, and from which batch size on Medusa should be off (``treeopt plan``).

A verify step of B sequences with an N-node tree costs what B x N tokens cost, so the best tree shrinks
as B grows and past some B plain decoding wins. From a latency profile over batch sizes (``treeopt
profile --batch-sizes``) and the cross-validated tokens/step of each tree size (``design.py``), this
predicts tokens/s at each (B, N) in one of two ways of serving:

- ``continuous``: finished rows are replaced at once (in-flight batching, as TensorRT-LLM serves, and as
  ``MedusaDecoder.serve`` runs): with an endless queue every step runs B rows and each request pays its own
  prefill, during which the batch waits: tokens / (steps / B x step_ms(B, N) + prefills), over the calibration
  prompts' held-out (tokens, steps, prompt tokens). For a burst of Q requests (what ``sweep`` and ``bench``
  measure) the queue is simulated to its end: newcomers prefilled together when slots free, the last steps
  with fewer rows.
- ``static`` (the default; ``bench`` and ``sweep`` run it unless told ``--batching continuous``): a batch starts
  together and rows leave when they finish, none join, so the batch's last steps run fewer rows. Each
  calibration prompt's own (tokens, steps) under the tree, held out by the cross-validation, is grouped
  into batches of B (many random groupings, the last batch filled up as ``bench`` does), and a batch's
  time is its prefill (B prompts padded to the longest, from the profile's prefill timings and the
  prompt lengths the stats record) plus the sum over its steps of step_ms(rows still decoding, N); step
  and prefill times at batch sizes between profiled ones are interpolated linearly. Stats or profiles
  without those fields count the prefill as one step.

The plan picks, per batch size, the size with the best predicted tokens/s by the profile's low quantile (what a
step itself costs, as ``build --budget auto`` chooses), reports tokens/s predicted from its medians (what a run on a
shared machine sees, stolen time included: the low quantile's optimism grew with the batch size), and reports the
batch size from which plain decoding is predicted as fast or faster. Pure Python; it neither decodes nor times.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import asdict, dataclass, replace

from medusa_runtime.spec import TreeSpec

from .design import DesignedTree, TreeRequest, design_tree
from .stats import CalibrationStats, replay_per_prompt
from .tuning import LatencyProfile

BATCHING = ("static", "continuous")
DEFAULT_BATCHING = "static"
GROUPINGS = 32  # random groupings of the calibration prompts into batches (static batching)


@dataclass
class BatchLatency:
    """Verify-step latency over (batch size, tree nodes), from a profile holding several batch sizes."""

    profiles: dict[int, LatencyProfile]

    def step_ms(self, batch: int, nodes: int) -> float:
        """Step time of ``batch`` rows with an ``nodes``-node tree (1: a plain step), linear between profiled batch sizes."""
        return self._along_batch(lambda p: p.plain_step_ms if nodes == 1 else p.at(nodes), batch)

    def typical(self) -> "BatchLatency":
        """The same profiles read by medians (``LatencyProfile.typical``): what throughput is predicted from."""
        return BatchLatency({b: p.typical() for b, p in self.profiles.items()})

    @property
    def has_prefill(self) -> bool:
        return all(p.prefill for p in self.profiles.values())

    def prefill_ms(self, batch: int, tokens: int) -> float:
        """A prefill of ``batch`` prompts padded to ``tokens``, linear between profiled batch sizes (0 if not profiled)."""
        return self._along_batch(lambda p: p.prefill_ms(tokens), batch) if self.has_prefill else 0.0

    def _along_batch(self, at, batch: int) -> float:
        """``at(profile)`` at ``batch`` rows: the smallest profile below it, linear between profiled batch sizes, and
        beyond the largest the last two sizes' slope (never decreasing)."""
        sizes = sorted(self.profiles)
        value = {b: at(self.profiles[b]) for b in sizes}
        if batch <= sizes[0]:
            return value[sizes[0]]
        b0, b1 = next(((x, y) for x, y in zip(sizes, sizes[1:]) if batch <= y), (sizes[-2], sizes[-1]) if len(sizes) > 1 else (sizes[0], sizes[0]))
        if b1 == b0:
            return value[b1]
        slope = (value[b1] - value[b0]) / (b1 - b0)
        return value[b0] + slope * (batch - b0) if batch <= b1 else value[b1] + max(0.0, slope) * (batch - b1)


def continuous_tokens_per_s(per_prompt: list[tuple[int, int, int | None]], batch: int, nodes: int, latency: BatchLatency,
                            queue: int | None = None, groupings: int = GROUPINGS, seed: int = 0) -> float:
    """Tokens/s of in-flight batching through ``batch`` slots, from these prompts' (tokens, steps, prompt tokens): a
    finished row's slot is refilled before the next step, the newcomers prefilled together while the batch waits
    (as ``MedusaDecoder.serve`` does). ``queue`` None: an endless queue (a server's steady state: every step runs
    ``batch`` rows and each request pays its own prefill), in closed form; else a burst of ``queue`` requests
    (random orders of these prompts, cycled), simulated to its end, so the last steps run fewer rows. Without
    prompt lengths or a profiled prefill, a request's prefill counts as one step."""
    live = [p for p in per_prompt if p[1] > 0]
    if not live:
        raise ValueError("no prompt generated tokens: nothing to predict from")
    prefill = latency.has_prefill and all(p[2] is not None for p in live)
    if queue is None:
        steps = sum(s - 1 for _, s, _ in live) if prefill else sum(s for _, s, _ in live)  # the replay counts the prefill as a step
        ms = steps / batch * latency.step_ms(batch, nodes) + (sum(latency.prefill_ms(1, n) for _, _, n in live) if prefill else 0.0)
        return sum(t for t, _, _ in live) * 1000.0 / ms
    step_ms = [0.0] + [latency.step_ms(b, nodes) for b in range(1, batch + 1)]  # by rows decoding
    rng = random.Random(seed)
    tokens = ms = 0.0
    for _ in range(groupings):
        order = live[:]
        rng.shuffle(order)
        waiting = deque(order[i % len(order)] for i in range(queue))
        running: list[int] = []  # steps each row still has to run
        while waiting or running:
            if waiting and len(running) < batch:  # admit: the newcomers' prefill (their first step) stalls the batch
                joining = [waiting.popleft() for _ in range(min(batch - len(running), len(waiting)))]
                ms += latency.prefill_ms(len(joining), max(p[2] for p in joining)) if prefill else step_ms[len(joining)]
                tokens += sum(p[0] for p in joining)
                running = [r for r in running + [p[1] - 1 for p in joining] if r > 0]
                continue
            k = min(running)  # steps until the next row ends (and a slot frees)
            ms += k * step_ms[len(running)]
            running = [r - k for r in running if r > k]
    return tokens * 1000.0 / ms


def static_tokens_per_s(per_prompt: list[tuple[int, int, int | None]], batch: int, nodes: int, latency: BatchLatency,
                        groupings: int = GROUPINGS, seed: int = 0) -> float:
    """Tokens/s of static batches of ``batch`` prompts drawn from these prompts' (tokens, steps, prompt tokens).
    With prompt lengths and a profiled prefill, a batch costs its prefill (padded to its longest prompt) plus
    its verify steps; without them, the prefill counts as one step."""
    live = [p for p in per_prompt if p[1] > 0]
    if not live:
        raise ValueError("no prompt generated tokens: nothing to predict from")
    step_ms = [0.0] + [latency.step_ms(b, nodes) for b in range(1, batch + 1)]  # by rows still decoding
    prefill = latency.has_prefill and all(p[2] is not None for p in live)
    tokens = seconds = 0.0
    rng = random.Random(seed)
    for _ in range(groupings):
        order = live[:]
        rng.shuffle(order)
        for start in range(0, len(order), batch):
            rows = [order[(start + i) % len(order)] for i in range(batch)]  # the last batch filled up, as bench does
            done = 0
            if prefill:  # the replay's steps count the prefill as the first one
                seconds += latency.prefill_ms(batch, max(p[2] for p in rows)) / 1000.0
                done = 1
            for k, steps in enumerate(sorted(p[1] for p in rows)):  # between the k-th and (k+1)-th row's end: batch - k rows
                seconds += max(0, steps - done) * step_ms[batch - k] / 1000.0
                done = max(done, steps)
            tokens += sum(p[0] for p in rows)
    return tokens / seconds


@dataclass
class BatchPlanRow:
    batch_size: int
    paths: int  # the planned tree's budget (0: plain decoding)
    nodes: int
    tokens_per_step: float  # cross-validated prediction for that size
    step_ms: float  # verify-step latency at (batch_size, nodes), from the profile
    tokens_per_s: float  # predicted under the plan's batching, whole batch
    plain_tokens_per_s: float  # plain decoding at this batch size, same batching
    speedup: float  # tokens_per_s / plain_tokens_per_s
    continuous_tokens_per_s: float  # the same tree under in-flight batching with an endless queue (a server's steady state)


@dataclass
class BatchPlan:
    rows: list[BatchPlanRow]
    switch_off_batch_size: int | None  # the smallest profiled batch size from which plain decoding is predicted as fast or faster
    batching: str
    device: str
    statistic: str  # which timing of the profile the sizes were chosen by (p10_ms or median_ms)
    curve: list[dict]  # the tokens/step curve every row was chosen on
    predicted_by: str = "median_ms"  # which timing the rows' step times and tokens/s are predicted from

    def row(self, batch_size: int) -> BatchPlanRow:
        for r in self.rows:
            if r.batch_size == batch_size:
                return r
        raise ValueError(f"batch size {batch_size} was not profiled (profiled: {', '.join(str(r.batch_size) for r in self.rows)}); "
                         f"re-run 'treeopt profile --batch-sizes' with it")

    @property
    def verdict(self) -> str:
        sizes = [r.batch_size for r in self.rows]
        if self.switch_off_batch_size is None:
            return (f"Medusa is predicted faster than plain decoding at every profiled batch size ({', '.join(map(str, sizes))}); "
                    f"profile larger batch sizes to find where it stops paying")
        below = [r for r in self.rows if r.batch_size < self.switch_off_batch_size]
        text = f"switch Medusa off from batch size {self.switch_off_batch_size} on (plain decoding predicted as fast or faster)"
        if below:
            text += f"; at batch size {below[-1].batch_size} Medusa is predicted {below[-1].speedup:.2f}x"
        later = [r.batch_size for r in self.rows if r.batch_size > self.switch_off_batch_size and r.paths > 0]
        if later:
            text += f"; Medusa is predicted to win again at batch size {', '.join(map(str, later))} (a noisy profile?)"
        return text

    def table(self) -> str:
        label = "p10 ms" if self.predicted_by == "p10_ms" else "med ms"
        lines = [f"{self.batching} batches ({'rows leave when done, none join' if self.batching == 'static' else 'finished rows replaced at once'})",
                 f"{'batch':>5} {'nodes':>5} {'tok/step':>8} {label:>8} {'tok/s':>8} {'plain tok/s':>11} {'speedup':>7}"]
        for r in self.rows:
            lines.append(f"{r.batch_size:>5} {r.nodes:>5} {r.tokens_per_step:>8.3f} {r.step_ms:>8.1f} {r.tokens_per_s:>8.2f} "
                         f"{r.plain_tokens_per_s:>11.2f} {r.speedup:>6.2f}x")
        lines.append(self.verdict)
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"device": self.device, "statistic": self.statistic, "predicted_by": self.predicted_by, "batching": self.batching,
                "switch_off_batch_size": self.switch_off_batch_size, "verdict": self.verdict,
                "rows": [asdict(r) for r in self.rows], "tokens_per_step_curve": self.curve}


def predicted_tokens_per_s(tokens_per_step: float, nodes: int, per_prompt: list[tuple[int, int, int | None]], batch: int,
                           latency: BatchLatency, batching: str, queue: int | None = None) -> float:
    """Predicted tokens/s of a tree (its predicted tokens/step, size, and per-prompt (tokens, steps, prompt tokens)) at
    ``batch`` rows. ``queue``: continuous batching of a burst of that many requests (None: an endless queue). One row
    of an endless queue: the rule ``build --budget auto`` picks by, tokens/step over step time (prefills not charged),
    so that the plan's batch-size-1 tree is the one ``build`` writes."""
    if batching not in BATCHING:
        raise ValueError(f"--batching {batching!r}: use one of {', '.join(BATCHING)}")
    if batch == 1 and queue is None:
        return tokens_per_step * 1000.0 / latency.step_ms(1, nodes)
    if batching == "continuous":
        return continuous_tokens_per_s(per_prompt, batch, nodes, latency, queue)
    return static_tokens_per_s(per_prompt, batch, nodes, latency)


def designed_tokens_per_s(designed: DesignedTree, paths: int, batch: int, latency: BatchLatency, batching: str,
                          queue: int | None = None) -> float:
    """``predicted_tokens_per_s`` of the ``paths``-path tree of ``designed``'s curve."""
    point = next(p for p in designed.curve if p["paths"] == paths)
    return predicted_tokens_per_s(point["tokens_per_step"], point["nodes"], designed.per_prompt[paths], batch, latency, batching, queue)


def plan_batches(stats: CalibrationStats, latencies: dict[int, LatencyProfile], request: TreeRequest,
                 batching: str = DEFAULT_BATCHING) -> BatchPlan:
    """One row per profiled batch size; ``request.budget`` must be None (the size is what is planned)."""
    if request.budget is not None:
        raise ValueError("a plan chooses the tree size itself: the request's budget must be auto (None)")
    if batching not in BATCHING:
        raise ValueError(f"--batching {batching!r}: use one of {', '.join(BATCHING)}")
    profiled = min(lat.sizes[-1] for lat in latencies.values())  # the largest tree every batch size was timed at
    if profiled > 1 and request.max_budget > profiled - 1:
        request = replace(request, max_budget=profiled - 1)  # plan only sizes that were measured
    sizes = sorted(latencies)
    choose = BatchLatency(latencies)  # the low quantile: what a step itself costs (tuning.py)
    predict = choose.typical()  # medians: what a run on this machine sees
    # one cross-validated curve for all batch sizes (design_tree computes it for any latency profile)
    designed = design_tree(stats, request, latencies[sizes[0]])
    rows = []
    for b in sizes:
        rates = {p["paths"]: designed_tokens_per_s(designed, p["paths"], b, choose, batching) for p in designed.curve}
        best = max(rates, key=lambda n: (rates[n], -n))  # ties: the smaller tree
        point = next(p for p in designed.curve if p["paths"] == best)
        rate, plain = (designed_tokens_per_s(designed, n, b, predict, batching) for n in (best, 0))
        rows.append(BatchPlanRow(b, best, point["nodes"], point["tokens_per_step"], round(predict.step_ms(b, point["nodes"]), 3),
                                 round(rate, 3), round(plain, 3), round(rate / plain, 4),
                                 round(designed_tokens_per_s(designed, best, b, predict, "continuous"), 3)))
    switch_off = next((r.batch_size for r in rows if r.paths == 0), None)
    first = latencies[sizes[0]]
    return BatchPlan(rows, switch_off, batching, first.device, first.statistic, designed.curve, first.typical().statistic)


def planned_tree(stats: CalibrationStats, plan: BatchPlan, request: TreeRequest, batch_size: int,
                 meta: dict | None = None) -> TreeSpec:
    """The plan's tree for one batch size, built as ``build --budget N`` builds it, with the plan in its meta.
    ``request``: the one the plan was made with (objective and shape limits)."""
    row = plan.row(batch_size)
    spec = design_tree(stats, replace(request, budget=row.paths), meta=meta).spec
    spec.meta.update({"budget_auto": True, "batch_size": batch_size, "batching": plan.batching, "latency_device": plan.device,
                      "predicted_tokens_per_s": row.tokens_per_s, "predicted_speedup": row.speedup,
                      "predicted_plain_tokens_per_s": row.plain_tokens_per_s, "plan": [asdict(r) for r in plan.rows]})
    return spec


def budget_tokens_per_s(stats: CalibrationStats, paths: int, batch: int, latency: BatchLatency, batching: str,
                        designed: DesignedTree | None = None, queue: int | None = None) -> float:
    """Predicted tokens/s of the tree ``build --budget paths`` writes (0: plain decoding) at ``batch`` rows;
    ``designed``: that build, if already made; ``queue``: as for ``predicted_tokens_per_s``."""
    if paths == 0:
        plain = [(t, s, n) for (t, s), n in zip(replay_per_prompt(stats, []), stats.prompt_lengths())]
        return predicted_tokens_per_s(1.0, 1, plain, batch, latency, batching, queue)
    return designed_tokens_per_s(designed or design_tree(stats, TreeRequest(paths)), paths, batch, latency, batching, queue)
