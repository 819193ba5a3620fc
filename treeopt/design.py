"""From calibration stats to a tree spec: what ``build``, ``sweep``, ``demo`` and ``tune`` share. Pure Python.

One request (a budget or ``auto``, an objective, limits, an engine target) gives one spec whose
``meta.expected_tokens_per_step`` is the cross-validated estimate for its size (``crossval.py``), with
the in-sample replay beside it. With ``auto``, the size is the one with the best predicted tokens/s under
a latency profile (``tuning.choose_budget``), and the prediction it uses is the cross-validated one too.
This module neither calibrates nor measures anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medusa_runtime.spec import TreeSpec

from .builder import DEFAULT_OBJECTIVE, BuildError, BuiltTree, build_tree, curve_points
from .crossval import DEFAULT_FOLDS, CrossValidation, cross_validate, live_prompts
from .stats import CalibrationStats, replay_per_prompt, replay_tokens_per_step
from .tuning import BudgetChoice, LatencyProfile, choose_budget


DEFAULT_MAX_BUDGET = 255  # largest size ``--budget auto`` considers


@dataclass
class ShapeLimits:
    """The shape a build may take once an engine target's own limits are applied."""

    max_depth: int | None
    max_children: int | None
    gap_free_depth: int  # siblings ranked 0..k-1 down to this depth


@dataclass
class TreeRequest:
    budget: int | None  # paths (nodes - 1); None: auto, from a latency profile
    objective: str = DEFAULT_OBJECTIVE
    max_depth: int | None = None
    max_children: int | None = None
    target: str | None = None  # an engine in formats.BUILD_TARGETS: build only trees it runs as they are
    folds: int = DEFAULT_FOLDS  # 0: no cross-validation (predictions are the in-sample replay; shrunk = empirical)
    max_budget: int = DEFAULT_MAX_BUDGET

    def limits(self, num_heads: int) -> ShapeLimits:
        """The requested depth and width, tightened by the target engine's limits (an engine's depth
        limit beyond the heads' own is no limit)."""
        if self.target is None:
            return ShapeLimits(self.max_depth, self.max_children, 0)
        from .formats import BUILD_TARGETS

        if self.target not in BUILD_TARGETS:
            raise BuildError(f"--for {self.target!r}: use one of {', '.join(BUILD_TARGETS)}")
        engine = BUILD_TARGETS[self.target]

        def tighter(mine: int | None, theirs: int | None) -> int | None:
            return theirs if mine is None else mine if theirs is None else min(mine, theirs)

        engine_depth = engine.max_depth if engine.max_depth is not None and engine.max_depth < num_heads else None
        return ShapeLimits(tighter(self.max_depth, engine_depth), tighter(self.max_children, engine.max_rank),
                           engine.gap_free_depth)


@dataclass
class DesignedTree:
    spec: TreeSpec
    curve: list[dict]  # per size: paths, nodes, tokens_per_step (cross-validated), in_sample_tokens_per_step
    choice: BudgetChoice | None  # the auto choice, when the budget was auto
    # per size: each calibration prompt's (tokens, steps, prompt tokens or None) behind the curve's prediction
    # (held out when cross-validated, else in-sample): how it spreads over prompts (``plan.py`` batches them)
    per_prompt: dict[int, list[tuple[int, int, int | None]]] = field(default_factory=dict)


def design_tree(stats: CalibrationStats, request: TreeRequest, latency: LatencyProfile | None = None,
                meta: dict | None = None) -> DesignedTree:
    """Build the tree the request asks for; ``meta`` (provenance, builder name) is merged into the spec's."""
    limits = request.limits(stats.num_heads)
    if request.budget is None and latency is None:
        raise BuildError("--budget auto needs --latency latency.json (make one with 'treeopt profile')")
    auto = request.budget is None
    sizes = curve_points(request.max_budget) if auto else [request.budget]
    cv_sizes = [n for n in sizes if n > 0]
    can_fold = request.folds > 0 and live_prompts(stats) >= 2  # one prompt: nothing to hold out, in-sample it is
    cv = (cross_validate(stats, cv_sizes, request.objective, request.folds, limits.max_depth, limits.max_children,
                         limits.gap_free_depth) if can_fold and cv_sizes else None)

    largest = max(sizes)
    by_strength: dict[float, BuiltTree] = {}  # one build per strength: its first n paths are its best n-path tree

    def build(n: int) -> tuple[BuiltTree, float]:
        strength = cv.strength(n) if cv is not None and n > 0 else 0.0
        if strength not in by_strength:
            by_strength[strength] = build_tree(stats, largest, request.objective, limits.max_depth, limits.max_children,
                                               strict=not auto, strength=strength, gap_free_depth=limits.gap_free_depth)
        return by_strength[strength], strength

    curve, per_prompt = [], {}
    lengths = stats.prompt_lengths()
    for n in sizes:
        built, strength = build(n)
        if len(built.paths) < n:  # the stats support fewer paths: larger sizes are the same tree
            break
        in_sample = replay_tokens_per_step(stats, built.paths[:n])
        predicted = cv.tokens_per_step(n) if cv is not None and n > 0 else in_sample
        replayed = cv.best(n).per_prompt[n] if cv is not None and n > 0 else replay_per_prompt(stats, built.paths[:n])
        order = cv.prompt_order if cv is not None and n > 0 else range(len(stats.rollouts))
        per_prompt[n] = [(t, s, lengths[i]) for (t, s), i in zip(replayed, order)]
        curve.append({"paths": n, "nodes": n + 1, "tokens_per_step": round(predicted, 4),
                      "in_sample_tokens_per_step": round(in_sample, 4), "strength": strength})
    choice = choose_budget(curve, latency) if auto else None
    n = choice.paths if choice is not None else request.budget
    built, strength = build(n)
    paths, probabilities = built.paths[:n], built.probabilities[:n]
    spec_meta = {
        "builder": "treeopt build", **(meta or {}),
        "objective": request.objective, "strength": strength, "budget": n, "max_depth": limits.max_depth,
        "max_children": limits.max_children, "target": request.target, "gap_free_depth": limits.gap_free_depth,
        "num_heads": stats.num_heads,
        "stats_provenance": stats.provenance,
        "sampling": stats.sampling(),  # what the prediction is for: a tree runs at any settings, its prediction at these
        "expected_tokens_per_step": next(r["tokens_per_step"] for r in curve if r["paths"] == n),
        "in_sample_tokens_per_step": next(r["in_sample_tokens_per_step"] for r in curve if r["paths"] == n),
        "cross_validation": cv_summary(cv, n),
        "objective_estimate_tokens_per_step": round(built.expected_tokens_per_step(n), 4),
        "path_probabilities": [round(p, 6) for p in probabilities],
        "predicted_curve": [r for r in curve if r["paths"] <= n] if auto else curve,
    }
    if choice is not None:
        spec_meta.update({"budget_auto": True, "latency_device": latency.device, "batch_size": latency.batch_size,
                          "predicted_speedup": round(choice.speedup, 4),
                          "predicted_tokens_per_s": round(choice.tokens_per_s, 3), "throughput_curve": choice.rows})
    return DesignedTree(TreeSpec(paths, spec_meta), curve, choice, per_prompt)


def build(stats: CalibrationStats, budget: int | None, *, objective: str = DEFAULT_OBJECTIVE, target: str | None = None,
          max_depth: int | None = None, max_children: int | None = None, folds: int = DEFAULT_FOLDS,
          latency: LatencyProfile | None = None) -> TreeSpec:
    """The tree ``treeopt build`` writes: ``budget`` paths (nodes - 1), or None with ``latency`` for the size with the
    best predicted tokens/s; ``target`` ("medusa" | "trtllm" | "vllm": a chain) builds only trees that engine runs as
    they are."""
    return design_tree(stats, TreeRequest(budget, objective, max_depth, max_children, target, folds), latency).spec


def cv_summary(cv: CrossValidation | None, n: int) -> dict | None:
    """What the spec records of the cross-validation at its size (None without one)."""
    if cv is None or n == 0:
        return None
    low, high = cv.interval(n)
    return {"folds": cv.folds, "tokens_per_step": round(cv.tokens_per_step(n), 4), "strength": cv.strength(n),
            "interval_90": [round(low, 4), round(high, 4)],
            "strength_spread": round(cv.strength_spread(n), 4),
            "interval_note": "bootstrap over prompts: how much tokens/step moves between prompt sets of this size"}

