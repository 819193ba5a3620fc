"""Which tree for which batch size, and from which batch size on Medusa should be off (``treeopt plan``).

A verify step of B sequences with an N-node tree costs what B x N tokens cost, so the best tree shrinks as B grows
and past some B plain decoding wins. From a latency profile over batch sizes (``treeopt profile --batch-sizes``) the
plan asks the one tree choice (``choice.choose_tree``) at every profiled batch size, on one cross-validated curve, for
one way of serving: ``static`` (the default; ``bench`` and ``sweep`` run it unless told ``--batching continuous``) or
``continuous`` (in-flight batching, as ``MedusaDecoder.serve`` runs and TensorRT-LLM serves). What either admits when
is described, and simulated, once: ``admission.py``. Each row holds the chosen tree, its tokens/s and plain
decoding's at that batch size (predicted from the profile's medians, the size chosen by its low quantile), and the
same tree's tokens/s under continuous batching of an endless queue (a server's steady state); the plan reports the
batch size from which plain decoding is predicted as fast or faster. Pure Python; it neither decodes nor times.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from medusa_runtime.spec import TreeSpec

from .admission import DEFAULT_BATCHING, PromptReplay, admission, tokens_per_s
from .choice import Serving, TreeChoice, batch_latency, choose_tree, measured_request
from .design import DesignedTree, TreeRequest, design_tree, plain_replays
from .stats import CalibrationStats
from .tuning import BatchLatency, LatencyProfile


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
    choices: dict[int, TreeChoice] = field(default_factory=dict, repr=False)  # batch size -> its choice (tree, curve)

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


def plan_batches(stats: CalibrationStats, latencies: dict[int, LatencyProfile], request: TreeRequest,
                 batching: str = DEFAULT_BATCHING) -> BatchPlan:
    """One row per profiled batch size: ``choose_tree`` at that batch size; ``request.budget`` must be None (the size
    is what is planned)."""
    if request.budget is not None:
        raise ValueError("a plan chooses the tree size itself: the request's budget must be auto (None)")
    admission(batching)
    latency = batch_latency(latencies)
    request = measured_request(request, latency)
    designed = design_tree(stats, request)  # one cross-validated curve for all batch sizes
    typical = latency.typical()
    rows, choices = [], {}
    for b in sorted(latencies):
        choice = choices[b] = choose_tree(stats, request, latency, Serving(b, batching), designed=designed)
        row = choice.chosen
        continuous = tokens_per_s(designed.per_prompt[row.paths], b, row.nodes, typical, "continuous")
        rows.append(BatchPlanRow(b, row.paths, row.nodes, row.tokens_per_step, row.latency_ms, row.tokens_per_s,
                                 choice.plain_tokens_per_s, round(choice.speedup, 4), round(continuous, 3)))
    switch_off = next((r.batch_size for r in rows if r.paths == 0), None)
    return BatchPlan(rows, switch_off, batching, latency.device, latency.statistic, designed.curve, typical.statistic, choices)


def planned_tree(stats: CalibrationStats, plan: BatchPlan, request: TreeRequest, batch_size: int,
                 meta: dict | None = None) -> TreeSpec:
    """The plan's tree for one batch size (what ``build --budget auto --batch-size B`` writes), the plan in its meta.
    ``stats`` and ``request``: the plan's own (kept for callers; the plan holds its choices)."""
    plan.row(batch_size)  # a clear error for a batch size that was not planned
    spec = plan.choices[batch_size].spec
    return TreeSpec(spec.paths, {**spec.meta, **(meta or {}), "plan": [asdict(r) for r in plan.rows]})


def budget_tokens_per_s(stats: CalibrationStats, paths: int, batch: int, latency: BatchLatency, batching: str,
                        designed: DesignedTree | None = None, queue: int | None = None) -> float:
    """Predicted tokens/s of the tree ``build --budget paths`` writes (0: plain decoding) at ``batch`` rows, by
    ``latency`` as given (``BatchLatency.typical()`` for the medians); ``designed``: that build, if already made;
    ``queue``: continuous batching of a burst of that many requests (``admission.tokens_per_s``)."""
    replays: list[PromptReplay] = (plain_replays(stats) if paths == 0
                                   else (designed or design_tree(stats, TreeRequest(paths))).per_prompt[paths])
    return tokens_per_s(replays, batch, paths + 1, latency, batching, queue)
