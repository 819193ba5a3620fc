"""Predicted tokens/step of any tree on any calibration stats (``treeopt evaluate``). Pure Python.

Three figures: the in-sample replay (exact on the rollouts it replays), its range over prompt sets of
that size (a bootstrap over prompts), and a cross-validated figure. A tree that ``build`` made from these
very stats was chosen on them, so its honest figure is that of the same procedure (objective, limits,
folds, strength search) cross-validated at its size, which is what ``build`` wrote as its prediction.
Any other tree (an upstream one, or one built from other stats) was not chosen on these rollouts: its
in-sample replay is already unbiased and is reported as its cross-validated figure too.
"""

from __future__ import annotations

from medusa_runtime.spec import TreeSpec

from .builder import OBJECTIVES, path_probability_fn
from .crossval import bootstrap_interval, cross_validate, live_prompts
from .stats import CalibrationStats, replay_per_prompt


def evaluate_tree(spec: TreeSpec, stats: CalibrationStats) -> dict:
    per_prompt = replay_per_prompt(stats, spec.paths)
    in_sample = sum(t for t, _ in per_prompt) / max(sum(s for _, s in per_prompt), 1)
    low, high = bootstrap_interval(per_prompt)
    settings = build_settings(spec.meta, stats)
    cross_validated, how = in_sample, "not built from these stats: the in-sample replay is unbiased"
    if settings is not None and spec.paths:
        if settings["folds"] and live_prompts(stats) >= 2:
            strengths = None if settings["objective"] == "shrunk" else (0.0,)
            cv = cross_validate(stats, [len(spec.paths)], settings["objective"], settings["folds"], settings["max_depth"],
                                settings["max_children"], settings["gap_free_depth"], strengths)
            cross_validated, how = cv.tokens_per_step(len(spec.paths)), f"{cv.folds}-fold, build's procedure at this size"
        else:
            how = "built from these stats without cross-validation: in-sample only (optimistic)"
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


def build_settings(meta: dict, stats: CalibrationStats) -> dict | None:
    """The settings of the ``build`` that made this spec from these stats, or None when the spec was not
    built from them (other provenance, none recorded, or mangled settings)."""
    if not stats.provenance or meta.get("stats_provenance") != stats.provenance:
        return None
    cv = meta.get("cross_validation")
    settings = {"objective": meta.get("objective"), "max_depth": meta.get("max_depth"),
                "max_children": meta.get("max_children"), "gap_free_depth": meta.get("gap_free_depth") or 0,
                "folds": cv.get("folds") if isinstance(cv, dict) else 0}
    if settings["objective"] not in OBJECTIVES:
        return None
    if not all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
               for k, v in settings.items() if k != "objective"):
        return None
    return settings
