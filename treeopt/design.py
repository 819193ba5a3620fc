"""The tokens/step side of a tree choice: from calibration stats and a request, each size's tree and its prediction.

One request (a budget, or None for every size up to ``max_budget``; an objective, limits, an engine target) gives a
``DesignedTree``: per size, the cross-validated tokens/step (``crossval.py``) with the in-sample replay beside it, each
calibration prompt's held-out replay (``admission.PromptReplay``: what throughput is simulated from), and the tree
itself as a spec whose ``meta.expected_tokens_per_step`` is that prediction. Pure Python.

This module knows nothing of latency: which size to run, and its predicted tokens/s, is ``choice.choose_tree`` (the
one tree choice ``build``, ``plan``, ``tune``, ``demo`` and the API share). It neither calibrates nor measures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medusa_runtime.spec import TreeSpec

from .admission import PromptReplay
from .builder import DEFAULT_OBJECTIVE, BuildError, BuiltTree, build_tree, curve_points
from .crossval import DEFAULT_FOLDS, CrossValidation, cross_validate, live_prompts
from .stats import CalibrationStats, replay_per_prompt, replay_tokens_per_step


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

    def check(self) -> None:
        """BuildError naming the option for a request no build can answer."""
        if self.budget is not None and self.budget < 0:
            raise BuildError(f"--budget {self.budget}: a number of paths >= 0, or 'auto'")
        if self.folds < 0 or self.folds == 1:
            raise BuildError(f"--folds {self.folds}: use 0 (no cross-validation) or >= 2")

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
    """Every size's tree and prediction for one request; ``tree(n)`` makes the spec of any size on ``curve``."""

    stats: CalibrationStats
    request: TreeRequest
    limits: ShapeLimits
    largest: int  # the largest size asked for: every build grows this many paths
    cv: CrossValidation | None
    curve: list[dict] = field(default_factory=list)  # per size: paths, nodes, tokens_per_step (cross-validated), in_sample_tokens_per_step, strength
    # per size: each calibration prompt's replay behind the curve's prediction (held out when cross-validated, else
    # in-sample): how it spreads over prompts, what throughput is simulated from (``admission.py``)
    per_prompt: dict[int, list[PromptReplay]] = field(default_factory=dict)
    meta: dict | None = None  # merged into ``spec``'s meta
    builds: dict[float, BuiltTree] = field(default_factory=dict)  # one build per strength: its first n paths are its best n-path tree

    def point(self, n: int) -> dict:
        """The curve's row of ``n`` paths; BuildError when the curve has no such size."""
        for row in self.curve:
            if row["paths"] == n:
                return row
        raise BuildError(f"no {n}-path tree on the curve (up to {self.curve[-1]['paths'] if self.curve else 0} paths); "
                         f"lower --budget, or calibrate on more prompts")

    def built(self, n: int) -> tuple[BuiltTree, float]:
        """The build whose first ``n`` paths are the ``n``-path tree, and its shrinkage strength."""
        strength = self.cv.strength(n) if self.cv is not None and n > 0 else 0.0
        if strength not in self.builds:
            limits = self.limits
            self.builds[strength] = build_tree(self.stats, self.largest, self.request.objective, limits.max_depth,
                                               limits.max_children, strict=self.request.budget is not None,
                                               strength=strength, gap_free_depth=limits.gap_free_depth)
        return self.builds[strength], strength

    def tree(self, n: int, meta: dict | None = None) -> TreeSpec:
        """The ``n``-path tree with its prediction in its meta; ``meta`` (provenance, builder name) merged in."""
        point = self.point(n)
        built, strength = self.built(n)
        limits, request, stats = self.limits, self.request, self.stats
        return TreeSpec(built.paths[:n], {
            "builder": "treeopt build", **(meta or {}),
            "objective": request.objective, "strength": strength, "budget": n, "max_depth": limits.max_depth,
            "max_children": limits.max_children, "target": request.target, "gap_free_depth": limits.gap_free_depth,
            "num_heads": stats.num_heads,
            "stats_provenance": stats.provenance,
            "sampling": stats.sampling(),  # what the prediction is for: a tree runs at any settings, its prediction at these
            "expected_tokens_per_step": point["tokens_per_step"],
            "in_sample_tokens_per_step": point["in_sample_tokens_per_step"],
            "cross_validation": cv_summary(self.cv, n),
            "objective_estimate_tokens_per_step": round(built.expected_tokens_per_step(n), 4),
            "path_probabilities": [round(p, 6) for p in built.probabilities[:n]],
            "predicted_curve": [r for r in self.curve if r["paths"] <= n] if request.budget is None else self.curve,
        })

    @property
    def spec(self) -> TreeSpec:
        """The requested budget's tree (a fixed budget only: an auto size is ``choice.choose_tree``'s to pick)."""
        if self.request.budget is None:
            raise BuildError("--budget auto needs --latency latency.json (make one with 'treeopt profile')")
        return self.tree(self.request.budget, self.meta)


def design_tree(stats: CalibrationStats, request: TreeRequest, *, meta: dict | None = None) -> DesignedTree:
    """The curve of the request: its budget alone, or every size up to ``request.max_budget`` when the budget is None.
    ``meta``: merged into ``spec``'s meta."""
    request.check()
    limits = request.limits(stats.num_heads)
    sizes = curve_points(request.max_budget) if request.budget is None else [request.budget]
    cv_sizes = [n for n in sizes if n > 0]
    can_fold = request.folds > 0 and live_prompts(stats) >= 2  # one prompt: nothing to hold out, in-sample it is
    cv = (cross_validate(stats, cv_sizes, request.objective, request.folds, limits.max_depth, limits.max_children,
                         limits.gap_free_depth) if can_fold and cv_sizes else None)
    designed = DesignedTree(stats, request, limits, max(sizes), cv, meta=meta)
    lengths = stats.prompt_lengths()
    for n in sizes:
        built, strength = designed.built(n)
        if len(built.paths) < n:  # the stats support fewer paths: larger sizes are the same tree
            break
        in_sample = replay_tokens_per_step(stats, built.paths[:n])
        held_out = cv is not None and n > 0
        replayed = cv.best(n).per_prompt[n] if held_out else replay_per_prompt(stats, built.paths[:n])
        order = cv.prompt_order if held_out else range(len(stats.rollouts))
        designed.per_prompt[n] = [PromptReplay(t, s, lengths[i]) for (t, s), i in zip(replayed, order)]
        predicted = cv.tokens_per_step(n) if held_out else in_sample
        designed.curve.append({"paths": n, "nodes": n + 1, "tokens_per_step": round(predicted, 4),
                               "in_sample_tokens_per_step": round(in_sample, 4), "strength": strength})
    return designed


def plain_replays(stats: CalibrationStats) -> list[PromptReplay]:
    """Each calibration prompt decoded without a tree (one token a step): plain decoding's requests."""
    return [PromptReplay(t, s, n) for (t, s), n in zip(replay_per_prompt(stats, []), stats.prompt_lengths())]


def build(stats: CalibrationStats, budget: int | None, *, objective: str = DEFAULT_OBJECTIVE, target: str | None = None,
          max_depth: int | None = None, max_children: int | None = None, folds: int = DEFAULT_FOLDS,
          latency=None) -> TreeSpec:
    """The tree ``treeopt build`` writes: ``budget`` paths (nodes - 1), or None with ``latency`` (a ``LatencyProfile``,
    or batch size -> profile) for the size with the best predicted tokens/s at batch size 1; ``target`` ("medusa" |
    "trtllm" | "vllm": a chain) builds only trees that engine runs as they are. ``choice.choose_tree`` for the rest."""
    from .choice import choose_tree

    return choose_tree(stats, TreeRequest(budget, objective, max_depth, max_children, target, folds), latency).spec


def cv_summary(cv: CrossValidation | None, n: int) -> dict | None:
    """What the spec records of the cross-validation at its size (None without one)."""
    if cv is None or n == 0:
        return None
    low, high = cv.interval(n)
    return {"folds": cv.folds, "tokens_per_step": round(cv.tokens_per_step(n), 4), "strength": cv.strength(n),
            "interval_90": [round(low, 4), round(high, 4)],
            "strength_spread": round(cv.strength_spread(n), 4),
            "interval_note": "bootstrap over prompts: how much tokens/step moves between prompt sets of this size"}

