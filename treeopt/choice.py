"""The one tree choice: (stats, request, latency, batch size, batching) -> the tree and its predicted curve.

``choose_tree`` is what ``build``, ``plan``, ``tune``, ``demo``, ``sweep`` and the API call. With a fixed budget it
builds that tree; with ``budget=None`` it picks, among every size on the request's curve (``design.py``), the one
with the most tokens/s for ``Serving`` (batch size, static or continuous batching, an endless queue or a burst),
tokens/s being what the admission that serving describes gives (``admission.tokens_per_s``: prefills, rows leaving or
joining, all simulated over the calibration prompts' held-out replays).

One rule for the latency (``tuning.py``): the size is chosen by the profile's low quantile (what a step itself costs),
and every tokens/s it reports, the chosen tree's, plain decoding's and the whole curve's, is predicted from the
profile's medians (what a run on a shared machine sees). Sizes beyond the largest tree the profile timed at every
batch size are not considered (their latency would be extrapolated).

This module neither calibrates, times nor decodes; it does not read files (``tuning.load_latency_batches`` does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from medusa_runtime.spec import TreeSpec

from .admission import DEFAULT_BATCHING, PromptReplay, admission, tokens_per_s
from .builder import BuildError
from .design import DesignedTree, TreeRequest, design_tree, plain_replays
from .stats import CalibrationStats
from .tuning import BatchLatency, LatencyProfile


@dataclass(frozen=True)
class Serving:
    """How the tree will be run: what its tokens/s are predicted for."""

    batch_size: int = 1
    batching: str = DEFAULT_BATCHING  # static | continuous (admission.py)
    queue: int | None = None  # continuous batching of a burst of this many requests (None: an endless queue); static: unused

    def check(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"--batch-size {self.batch_size}: use an integer >= 1")
        admission(self.batching)


@dataclass
class SizeRate:
    """One size of the predicted curve at the serving's batch size."""

    paths: int
    nodes: int
    tokens_per_step: float  # cross-validated prediction (plain decoding: 1)
    choice_latency_ms: float  # a full batch's step by the low quantile
    choice_tokens_per_s: float  # by the low quantile: what the size is chosen by
    latency_ms: float  # a full batch's step by medians
    tokens_per_s: float  # predicted, by medians


@dataclass
class TreeChoice:
    """The chosen tree, and, with a latency profile, its predicted tokens/s beside every other size's."""

    spec: TreeSpec
    designed: DesignedTree
    serving: Serving
    rates: list[SizeRate] = field(default_factory=list)  # [] without a latency profile
    plain: SizeRate | None = None  # plain decoding at the same batch size and batching
    statistic: str | None = None  # which timing the size was chosen by (p10_ms, or median_ms for files without it)
    predicted_by: str | None = None  # which timing the tokens/s are predicted by (median_ms)

    @property
    def paths(self) -> int:
        return len(self.spec.paths)

    @property
    def curve(self) -> list[dict]:
        """The tokens/step curve the choice was made on."""
        return self.designed.curve

    @property
    def throughput_curve(self) -> list[dict]:
        """``rates`` as the spec's meta and the curve plot take them."""
        return [asdict(r) for r in self.rates]

    @property
    def chosen(self) -> SizeRate | None:
        return next((r for r in self.rates if r.paths == self.paths), None)

    @property
    def tokens_per_s(self) -> float | None:
        return self.chosen.tokens_per_s if self.chosen else None

    @property
    def plain_tokens_per_s(self) -> float | None:
        return self.plain.tokens_per_s if self.plain else None

    @property
    def speedup(self) -> float | None:
        return self.chosen.tokens_per_s / self.plain.tokens_per_s if self.chosen and self.plain else None

    def table(self) -> str:
        """The predicted curve, the chosen size marked ('' without a latency profile)."""
        if not self.rates:
            return ""
        low, typical = ("p10" if by == "p10_ms" else "med" for by in (self.statistic, self.predicted_by))
        s = self.serving
        lines = [f"{s.batching} batches of {s.batch_size} ({admission(s.batching).description}): sizes chosen by "
                 f"{low} ms, tok/s predicted by {typical} ms",
                 f"{'nodes':>5} {'tok/step':>8} {low + ' ms':>8} {low + ' tok/s':>9} {typical + ' ms':>8} {'tok/s':>8} {'vs plain':>8}"]
        for r in self.rates:
            mark = "  <- chosen" if r.paths == self.paths else ""
            lines.append(f"{r.nodes:>5} {r.tokens_per_step:>8.3f} {r.choice_latency_ms:>8.1f} {r.choice_tokens_per_s:>9.2f} "
                         f"{r.latency_ms:>8.1f} {r.tokens_per_s:>8.2f} {r.tokens_per_s / self.plain.tokens_per_s:>7.2f}x{mark}")
        batch = f" at batch size {s.batch_size}" if s.batch_size > 1 else ""
        lines.append(f"plain decoding{batch}: {self.plain.tokens_per_s:.2f} tok/s; chosen {self.spec.nodes} nodes, "
                     f"predicted {self.tokens_per_s:.2f} tok/s ({self.speedup:.2f}x)")
        return "\n".join(lines)

    def summary(self) -> str:
        """'7-node tree (depth 3, shrunk, ...): predicted 1.9 tokens/step (...)[, 41.2 tok/s, 1.35x plain ...]'."""
        meta = self.spec.meta
        strength = f", shrinkage strength {meta['strength']:g}" if meta.get("objective") == "shrunk" else ""
        text = (f"{self.spec.nodes}-node tree (depth {self.spec.depth}, {meta['objective']}{strength}): "
                f"predicted {prediction_text(meta)}")
        if self.chosen is not None:
            s = self.serving
            text += (f"; {self.tokens_per_s:.2f} tok/s, {self.speedup:.2f}x plain decoding at batch size {s.batch_size} "
                     f"({s.batching} batches, {'median' if self.predicted_by == 'median_ms' else '10th-percentile'} step times)")
        return text


def prediction_text(meta: dict) -> str:
    """'1.665 tokens/step (5-fold cross-validated; in-sample 1.666; 90% over prompt sets 1.62-1.71)'."""
    cv = meta.get("cross_validation")
    if not cv:
        return f"{meta['expected_tokens_per_step']:.3f} tokens/step (in-sample replay of the calibration rollouts)"
    low, high = cv["interval_90"]
    return (f"{meta['expected_tokens_per_step']:.3f} tokens/step ({cv['folds']}-fold cross-validated over prompts; "
            f"in-sample {meta['in_sample_tokens_per_step']:.3f}; 90% range over prompt sets of this size {low:.2f}-{high:.2f})")


def batch_latency(latency: LatencyProfile | dict[int, LatencyProfile] | BatchLatency | None) -> BatchLatency | None:
    """Any form of a latency profile as a ``BatchLatency`` (a lone ``LatencyProfile``: its own batch size)."""
    if latency is None or isinstance(latency, BatchLatency):
        return latency
    if isinstance(latency, LatencyProfile):
        return BatchLatency({latency.batch_size: latency})
    return BatchLatency(dict(latency))


def measured_request(request: TreeRequest, latency: BatchLatency) -> TreeRequest:
    """The request with its largest size cut to the largest tree every batch size was timed at."""
    largest = latency.largest_tree
    return replace(request, max_budget=largest - 1) if largest > 1 and request.max_budget > largest - 1 else request


def size_rate(replays: list[PromptReplay], point: dict, serving: Serving, latency: BatchLatency) -> SizeRate:
    """One size's tokens/s at ``serving``, by the profile's low quantile and by its medians."""
    b, nodes = serving.batch_size, point["nodes"]
    typical = latency.typical()
    low = tokens_per_s(replays, b, nodes, latency, serving.batching, serving.queue)
    median = tokens_per_s(replays, b, nodes, typical, serving.batching, serving.queue)
    return SizeRate(point["paths"], nodes, point["tokens_per_step"], round(latency.step_ms(b, nodes), 3), round(low, 3),
                    round(typical.step_ms(b, nodes), 3), round(median, 3))


def choose_tree(stats: CalibrationStats, request: TreeRequest,
                latency: LatencyProfile | dict[int, LatencyProfile] | BatchLatency | None = None,
                serving: Serving = Serving(), meta: dict | None = None, designed: DesignedTree | None = None) -> TreeChoice:
    """The tree for ``request`` run as ``serving``: its budget, or (``budget=None``) the size with the most tokens/s by
    ``latency``'s low quantile (ties: the smaller tree); every tokens/s predicted by its medians. ``latency``: a profile
    of each batch size up to ``serving.batch_size`` (static rows leave: the batch's last steps run fewer rows);
    ``meta``: merged into the spec's; ``designed``: ``design_tree`` of this request, if already made (``plan`` makes one
    for all batch sizes). Raises BuildError or ValueError with the option to change."""
    serving.check()
    profiles = batch_latency(latency)
    if request.budget is None:
        if profiles is None:
            raise BuildError("--budget auto needs --latency latency.json (make one with 'treeopt profile')")
        request = measured_request(request, profiles)
    if profiles is not None and serving.batch_size > 1 and serving.batch_size not in profiles.profiles:
        sizes = sorted(profiles.profiles)
        raise ValueError(f"the latency profile has no batch size {serving.batch_size} (profiled: {', '.join(map(str, sizes))}); "
                         f"re-run 'treeopt profile --batch-sizes {','.join(map(str, sorted({*sizes, serving.batch_size})))}'")
    designed = designed or design_tree(stats, request)
    if profiles is None:
        return TreeChoice(designed.tree(request.budget, meta), designed, serving)
    rates = [size_rate(designed.per_prompt[p["paths"]], p, serving, profiles) for p in designed.curve]
    best = request.budget if request.budget is not None else max(rates, key=lambda r: (r.choice_tokens_per_s, -r.paths)).paths
    plain = size_rate(plain_replays(stats), {"paths": 0, "nodes": 1, "tokens_per_step": 1.0}, serving, profiles)
    choice = TreeChoice(designed.tree(best, meta), designed, serving, rates, plain, profiles.statistic,
                        profiles.typical().statistic)
    choice.spec.meta.update({
        **({"budget_auto": True} if request.budget is None else {}),
        "batch_size": serving.batch_size, "batching": serving.batching, "latency_device": profiles.device,
        "chosen_by": choice.statistic, "predicted_by": choice.predicted_by,
        "predicted_tokens_per_s": choice.tokens_per_s, "predicted_plain_tokens_per_s": plain.tokens_per_s,
        "predicted_speedup": round(choice.speedup, 4), "throughput_curve": choice.throughput_curve})
    return choice
