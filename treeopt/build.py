"""Optimal tree construction under a node budget. Pure Python.

With greedy verification at most one node per depth is accepted, and only if all its ancestors are,
so E[tokens per step] = 1 + sum over nodes of P(the node's whole path matches). P never increases from
parent to child, so the N most probable paths form a valid tree and maximise the sum: a best-first
search from the root yields them in order (ties broken by depth, then by the path itself, so the
result is deterministic and every prefix of the list is the optimal tree of its size).

Objectives: ``empirical`` P(path) = fraction of calibration positions whose rank rows start with the
path (captures head correlation); ``independent`` P(path) = prod a[k][r_k] (upstream Medusa's model).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from .stats import CalibrationStats, replay_tokens_per_step

OBJECTIVES = ("empirical", "independent")


class BuildError(ValueError):
    pass


@dataclass
class BuiltTree:
    paths: list[tuple[int, ...]]
    probabilities: list[float]  # P(path) under the objective, in insertion order

    def expected_tokens_per_step(self, n: int | None = None) -> float:
        """1 + sum of path probabilities over the first n paths (the objective's own estimate)."""
        return 1.0 + sum(self.probabilities[: len(self.paths) if n is None else n])


def path_probability_fn(stats: CalibrationStats, objective: str):
    if objective == "empirical":
        counts = stats.prefix_counts()
        total = max(stats.positions, 1)
        return lambda path: counts.get(path, 0) / total
    if objective == "independent":
        acc = stats.accuracy()

        def independent(path):
            p = 1.0
            for k, r in enumerate(path):
                p *= acc[k][r]
            return p

        return independent
    raise BuildError(f"--objective {objective!r}: use one of {', '.join(OBJECTIVES)}")


def build_tree(stats: CalibrationStats, budget: int, objective: str = "empirical", max_depth: int | None = None,
               max_children: int | None = None, strict: bool = True) -> BuiltTree:
    """The ``budget`` most probable paths (depth <= max_depth, ranks < max_children), in insertion order.

    ``strict=False`` returns fewer paths when the stats support fewer (for budget searches)."""
    if budget < 0:
        raise BuildError(f"--budget {budget}: must be >= 0")
    depth = stats.num_heads if max_depth is None else max_depth
    if depth > stats.num_heads:
        raise BuildError(f"--max-depth {depth} exceeds the {stats.num_heads} heads the stats measured")
    width = stats.topk if max_children is None else min(max_children, stats.topk)
    if width < 1 or depth < 1:
        raise BuildError("--max-depth and --max-children must be >= 1")
    prob = path_probability_fn(stats, objective)
    heap: list[tuple[float, int, tuple[int, ...]]] = []

    def push_children(parent: tuple[int, ...]) -> None:
        if len(parent) < depth:
            for r in range(width):
                child = parent + (r,)
                p = prob(child)
                if p > 0:
                    heapq.heappush(heap, (-p, len(child), child))

    push_children(())
    paths, probs = [], []
    while heap and len(paths) < budget:
        neg_p, _, path = heapq.heappop(heap)
        paths.append(path)
        probs.append(-neg_p)
        push_children(path)
    if len(paths) < budget and strict:
        raise BuildError(
            f"--budget {budget}: the stats support only {len(paths)} paths with non-zero probability "
            f"(depth <= {depth}, ranks < {width}, {stats.positions} positions); lower --budget or calibrate on more prompts"
        )
    return BuiltTree(paths, probs)


def curve_points(budget: int) -> list[int]:
    """Node counts at which the predicted curve is replayed: every n up to 32, then every 8th, and the budget."""
    points = set(range(0, min(budget, 32) + 1)) | set(range(0, budget + 1, 8)) | {budget}
    return sorted(points)


def predicted_curve(stats: CalibrationStats, built: BuiltTree) -> list[dict]:
    """Replayed tokens/step (and the objective's estimate) for the first n paths, n on ``curve_points``."""
    return [
        {"paths": n, "nodes": n + 1, "tokens_per_step": round(replay_tokens_per_step(stats, built.paths[:n]), 4),
         "objective_estimate": round(built.expected_tokens_per_step(n), 4)}
        for n in curve_points(len(built.paths))
    ]
