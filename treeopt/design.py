"""From calibration stats to a tree spec: what ``build``, ``sweep`` and ``demo`` share. Pure Python.

One request (a budget or ``auto``, an objective, limits, an engine target) gives one spec whose
``meta.expected_tokens_per_step`` is the cross-validated estimate for its size (``crossval.py``), with
the in-sample replay beside it. With ``auto``, the size is the one with the best predicted tokens/s under
a latency profile (``tuning.choose_budget``), and the prediction it uses is the cross-validated one too.
This module neither calibrates nor measures anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from medusa_runtime.spec import TreeSpec

from .build import DEFAULT_OBJECTIVE, BuildError, build_tree, curve_points
from .crossval import DEFAULT_FOLDS, CrossValidation, cross_validate, live_prompts
from .stats import CalibrationStats, replay_tokens_per_step
from .tuning import BudgetChoice, LatencyProfile, choose_budget


@dataclass
class TreeRequest:
    budget: int | None  # paths (nodes - 1); None: auto, from a latency profile
    objective: str = DEFAULT_OBJECTIVE
    max_depth: int | None = None
    max_children: int | None = None
    target: str | None = None  # an engine in formats.BUILD_TARGETS: build only trees it runs as they are
    folds: int = DEFAULT_FOLDS  # 0: no cross-validation (predictions are the in-sample replay)
    max_budget: int = 255  # largest size ``auto`` considers

    def limits(self) -> tuple[int | None, bool]:
        """(max_children, gap_free_depth) after the target engine's limits."""
        if self.target is None:
            return self.max_children, 0
        from .formats import BUILD_TARGETS

        if self.target not in BUILD_TARGETS:
            raise BuildError(f"--for {self.target!r}: use one of {', '.join(BUILD_TARGETS)}")
        engine = BUILD_TARGETS[self.target]
        children = engine.max_rank if self.max_children is None else min(self.max_children, engine.max_rank)
        return children, engine.gap_free_depth


@dataclass
class DesignedTree:
    spec: TreeSpec
    curve: list[dict]  # per size: paths, nodes, tokens_per_step (cross-validated), in_sample_tokens_per_step
    choice: BudgetChoice | None  # the auto choice, when the budget was auto


def design_tree(stats: CalibrationStats, request: TreeRequest, latency: LatencyProfile | None = None,
                meta: dict | None = None) -> DesignedTree:
    """Build the tree the request asks for; ``meta`` (provenance, builder name) is merged into the spec's."""
    children, gap_free_depth = request.limits()
    if request.budget is not None and request.budget < 0:
        raise BuildError(f"--budget {request.budget}: must be >= 0")
    if request.budget is None and latency is None:
        raise BuildError("--budget auto needs --latency latency.json (make one with 'treeopt profile')")
    auto = request.budget is None
    sizes = curve_points(request.max_budget) if auto else [request.budget]
    cv_sizes = [n for n in sizes if n > 0]
    can_fold = request.folds > 0 and live_prompts(stats) >= 2  # one prompt: nothing to hold out, in-sample it is
    cv = (cross_validate(stats, cv_sizes, request.objective, request.folds, request.max_depth, children, gap_free_depth)
          if can_fold and cv_sizes else None)

    def build(n: int, strict: bool):
        strength = cv.strength(n) if cv is not None and n > 0 else 0.0
        return build_tree(stats, n, request.objective, request.max_depth, children, strict=strict,
                          strength=strength, gap_free_depth=gap_free_depth), strength

    curve = []
    builds = {}
    for n in sizes:
        built, strength = build(n, strict=not auto)
        if len(built.paths) < n:  # the stats support fewer paths: larger sizes are the same tree
            break
        builds[n] = (built, strength)
        in_sample = replay_tokens_per_step(stats, built.paths)
        predicted = cv.tokens_per_step(n) if cv is not None and n > 0 else in_sample
        curve.append({"paths": n, "nodes": n + 1, "tokens_per_step": round(predicted, 4),
                      "in_sample_tokens_per_step": round(in_sample, 4), "strength": strength})
    choice = choose_budget(curve, latency) if auto else None
    n = choice.paths if choice is not None else request.budget
    built, strength = builds[n]
    spec_meta = {
        "builder": "treeopt build", **(meta or {}),
        "objective": request.objective, "strength": strength, "budget": n, "max_depth": request.max_depth,
        "max_children": children, "target": request.target, "gap_free_depth": gap_free_depth, "num_heads": stats.num_heads,
        "stats_provenance": stats.provenance,
        "expected_tokens_per_step": next(r["tokens_per_step"] for r in curve if r["paths"] == n),
        "in_sample_tokens_per_step": next(r["in_sample_tokens_per_step"] for r in curve if r["paths"] == n),
        "cross_validation": cv_summary(cv, n),
        "objective_estimate_tokens_per_step": round(built.expected_tokens_per_step(), 4),
        "path_probabilities": [round(p, 6) for p in built.probabilities],
        "predicted_curve": [r for r in curve if r["paths"] <= n] if auto else curve,
    }
    if choice is not None:
        spec_meta.update({"budget_auto": True, "latency_device": latency.device, "predicted_speedup": round(choice.speedup, 4),
                          "predicted_tokens_per_s": round(choice.tokens_per_s, 3), "throughput_curve": choice.rows})
    return DesignedTree(TreeSpec(built.paths, spec_meta), curve, choice)


def cv_summary(cv: CrossValidation | None, n: int) -> dict | None:
    """What the spec records of the cross-validation at its size (None without one)."""
    if cv is None or n == 0:
        return None
    low, high = cv.interval(n)
    return {"folds": cv.folds, "tokens_per_step": round(cv.tokens_per_step(n), 4), "strength": cv.strength(n),
            "interval_90": [round(low, 4), round(high, 4)],
            "interval_note": "bootstrap over prompts: how much tokens/step moves between prompt sets of this size"}


def evaluate_tree(spec: TreeSpec, stats: CalibrationStats, folds: int = DEFAULT_FOLDS) -> dict:
    """In-sample replay of any tree on any stats, its range over prompt sets, and a cross-validated figure.

    A tree that ``build`` made from stats like these (its meta names the objective) was chosen on them, so
    its honest figure is the cross-validated one of the same procedure at its size. Any other tree (an
    upstream one, or one built from other stats) was not chosen on these rollouts: its in-sample replay
    is already unbiased and is reported as its cross-validated figure too."""
    from .build import path_probability_fn
    from .crossval import bootstrap_interval
    from .stats import replay_per_prompt

    per_prompt = replay_per_prompt(stats, spec.paths)
    in_sample = sum(t for t, _ in per_prompt) / max(sum(s for _, s in per_prompt), 1)
    low, high = bootstrap_interval(per_prompt)
    meta = spec.meta
    settings = build_settings(meta) if meta.get("stats_provenance") == stats.provenance else None
    cross_validated, how = in_sample, "not built from these stats: the in-sample replay is unbiased"
    if settings is not None and folds > 0 and spec.paths and live_prompts(stats) >= 2:
        cv = cross_validate(stats, [len(spec.paths)], settings["objective"], folds, settings["max_depth"],
                            settings["max_children"], settings["gap_free_depth"])
        cross_validated, how = cv.tokens_per_step(len(spec.paths)), f"{cv.folds}-fold, the build procedure at this size"
    empirical = path_probability_fn(stats, "empirical")
    independent = path_probability_fn(stats, "independent")
    return {
        "nodes": spec.nodes, "depth": spec.depth,
        "predicted_tokens_per_step": round(in_sample, 4),
        "interval_90": [round(low, 4), round(high, 4)],
        "cross_validated_tokens_per_step": round(cross_validated, 4), "cross_validation": how,
        "empirical_estimate": round(1 + sum(empirical(p) for p in spec.paths), 4),
        "independent_estimate": round(1 + sum(independent(p) if max(p) < stats.topk else 0.0 for p in spec.paths), 4),
        "positions": stats.positions, "prompts": len(stats.rollouts),
    }


def build_settings(meta: dict) -> dict | None:
    """The build settings a spec's meta records, or None when it records none (or mangled ones)."""
    settings = {"objective": meta.get("objective"), "max_depth": meta.get("max_depth"),
                "max_children": meta.get("max_children"), "gap_free_depth": meta.get("gap_free_depth") or 0}
    if not isinstance(settings["objective"], str):
        return None
    if not all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
               for k, v in settings.items() if k != "objective"):
        return None
    return settings
