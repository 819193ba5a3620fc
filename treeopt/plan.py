"""Which tree for which batch size, and from which batch size on Medusa should be off (``treeopt plan``).

A verify step of B sequences with an N-node tree costs what B x N tokens cost, so the best tree shrinks
as B grows and past some B plain decoding wins. For each batch size in a latency profile
(``treeopt profile --batch-sizes``) this picks the tree size with the best predicted throughput,
B x tokens/step(n) / step_ms(B, n), on the cross-validated tokens/step curve that ``build`` predicts
with (``design.py``), and compares it with plain decoding at the same B (B / plain_step_ms(B)). The
tokens/step curve does not depend on B: acceptance is per row. Pure Python; it neither decodes nor times.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .design import TreeRequest, design_tree
from .stats import CalibrationStats
from .tuning import LatencyProfile, choose_budget


@dataclass
class BatchPlanRow:
    batch_size: int
    paths: int  # the planned tree's budget (0: plain decoding)
    nodes: int
    tokens_per_step: float  # cross-validated prediction for that size
    step_ms: float  # verify-step latency at (batch_size, nodes), from the profile
    tokens_per_s: float  # predicted, whole batch
    plain_tokens_per_s: float  # plain decoding at this batch size, whole batch
    speedup: float  # tokens_per_s / plain_tokens_per_s


@dataclass
class BatchPlan:
    rows: list[BatchPlanRow]
    switch_off_batch_size: int | None  # the smallest profiled batch size from which plain decoding is predicted as fast or faster
    device: str
    statistic: str  # which timing of the profile (p10_ms or median_ms)
    curve: list[dict]  # the tokens/step curve every row was chosen on

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
        label = "p10 ms" if self.statistic == "p10_ms" else "med ms"
        lines = [f"{'batch':>5} {'nodes':>5} {'tok/step':>8} {label:>8} {'tok/s':>8} {'plain tok/s':>11} {'speedup':>7}"]
        for r in self.rows:
            lines.append(f"{r.batch_size:>5} {r.nodes:>5} {r.tokens_per_step:>8.3f} {r.step_ms:>8.1f} {r.tokens_per_s:>8.2f} "
                         f"{r.plain_tokens_per_s:>11.2f} {r.speedup:>6.2f}x")
        lines.append(self.verdict)
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"device": self.device, "statistic": self.statistic, "switch_off_batch_size": self.switch_off_batch_size,
                "verdict": self.verdict, "rows": [asdict(r) for r in self.rows], "tokens_per_step_curve": self.curve}


def plan_batches(stats: CalibrationStats, latencies: dict[int, LatencyProfile], request: TreeRequest) -> BatchPlan:
    """One row per profiled batch size; ``request.budget`` must be None (the size is what is planned)."""
    if request.budget is not None:
        raise ValueError("a plan chooses the tree size itself: the request's budget must be auto (None)")
    sizes = sorted(latencies)
    # one cross-validated curve for all batch sizes (design_tree computes it for any latency profile)
    curve = design_tree(stats, request, latencies[sizes[0]]).curve
    rows = []
    for b in sizes:
        choice = choose_budget(curve, latencies[b])
        chosen = next(r for r in choice.rows if r["paths"] == choice.paths)
        rows.append(BatchPlanRow(b, choice.paths, chosen["nodes"], chosen["tokens_per_step"], chosen["latency_ms"],
                                 choice.tokens_per_s, round(choice.baseline_tokens_per_s, 3), round(choice.speedup, 4)))
    switch_off = next((r.batch_size for r in rows if r.paths == 0), None)
    first = latencies[sizes[0]]
    return BatchPlan(rows, switch_off, first.device, first.statistic, curve)
