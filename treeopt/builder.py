"""Optimal tree construction under a node budget. Pure Python.

With greedy verification at most one node per depth is accepted, and only if all its ancestors are,
so E[tokens per step] = 1 + sum over nodes of P(the node's whole path matches). P never increases from
parent to child, so the N most probable paths form a valid tree and maximise the sum: a best-first
search from the root yields them in order (ties broken by depth, then by the path itself, so the
result is deterministic and every prefix of the list is the optimal tree of its size).

Objectives:
* ``empirical``: P(path) = fraction of calibration positions whose rank rows start with the path (captures
  head correlation, but trusts a deep path seen 3 times as much as a short one seen 500 times);
* ``independent``: P(path) = prod a[k][r_k] (upstream Medusa's model);
* ``shrunk`` (default): P(path) = P(parent) * q, where q, the child's acceptance given its parent, is
  count(child) / count(parent) shrunk towards the head's rank accuracy a[d][r] with a strength s:
  q = (count(child) + s * a[d][r]) / (count(parent) + s). s = 0 is ``empirical``; s -> infinity is
  ``independent``. q <= 1, so a child is never more probable than its parent and best-first search stays
  optimal. The strength is chosen by cross-validation over prompts (``crossval.py``), not here.

``gap_free_depth`` (for engines that need siblings' ranks to be 0..k-1 down to some depth): at those depths
a node's rank r+1 child becomes a candidate only once its rank r child is in the tree, and candidates of
probability 0 are kept there (last in line) so that such a chain can go on. The result is the best tree
the search reaches under that rule, not a proven optimum over all gap-free trees.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from .stats import CalibrationStats

OBJECTIVES = ("shrunk", "empirical", "independent")
DEFAULT_OBJECTIVE = "shrunk"


class BuildError(ValueError):
    pass


@dataclass
class BuiltTree:
    paths: list[tuple[int, ...]]
    probabilities: list[float]  # P(path) under the objective, in insertion order

    def expected_tokens_per_step(self, n: int | None = None) -> float:
        """1 + sum of path probabilities over the first n paths (the objective's own estimate)."""
        return 1.0 + sum(self.probabilities[: len(self.paths) if n is None else n])


def path_probability_fn(stats: CalibrationStats, objective: str, strength: float = 0.0):
    """P(path) under the objective; ``strength`` is the shrinkage strength of ``shrunk`` (ignored otherwise)."""
    if objective == "shrunk":
        return shrunk_probability_fn(stats, strength)
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


def shrunk_probability_fn(stats: CalibrationStats, strength: float):
    """P(path) = P(parent) * (count(path) + s * a[d][r]) / (count(parent) + s), memoised along the path."""
    if strength < 0:
        raise BuildError(f"shrinkage strength {strength}: must be >= 0")
    counts = stats.prefix_counts()
    acc = stats.accuracy()
    memo: dict[tuple[int, ...], float] = {(): 1.0}

    def shrunk(path: tuple[int, ...]) -> float:
        if path not in memo:
            parent = path[:-1]
            parent_count = counts.get(parent, 0) if parent else stats.positions
            prior = acc[len(path) - 1][path[-1]]
            denominator = parent_count + strength
            q = (counts.get(path, 0) + strength * prior) / denominator if denominator > 0 else 0.0
            memo[path] = shrunk(parent) * q
        return memo[path]

    return shrunk


def build_tree(stats: CalibrationStats, budget: int, objective: str = "empirical", max_depth: int | None = None,
               max_children: int | None = None, strict: bool = True, strength: float = 0.0,
               gap_free_depth: int = 0) -> BuiltTree:
    """The ``budget`` most probable paths (depth <= max_depth, ranks < max_children), in insertion order.

    ``strict=False`` returns fewer paths when the stats support fewer (for budget searches);
    ``strength``: the shrinkage strength of ``shrunk``; ``gap_free_depth``: siblings' ranks stay 0..k-1 down
    to that depth."""
    if budget < 0:
        raise BuildError(f"--budget {budget}: must be >= 0")
    depth = stats.num_heads if max_depth is None else max_depth
    if depth > stats.num_heads:
        raise BuildError(f"--max-depth {depth} exceeds the {stats.num_heads} heads the stats measured")
    width = stats.topk if max_children is None else min(max_children, stats.topk)
    if width < 1 or depth < 1:
        raise BuildError("--max-depth and --max-children must be >= 1")
    prob = path_probability_fn(stats, objective, strength)
    heap: list[tuple[float, int, tuple[int, ...]]] = []

    def push(path: tuple[int, ...]) -> None:
        if len(path) <= depth and path[-1] < width:
            p = prob(path)
            if p > 0 or len(path) <= gap_free_depth:  # a never-seen rank may have to stand before a seen one
                heapq.heappush(heap, (-p, len(path), path))

    def push_children(parent: tuple[int, ...]) -> None:
        for r in range(1 if len(parent) < gap_free_depth else width):  # gap-free: rank r+1 waits for rank r (below)
            push(parent + (r,))

    push_children(())
    paths, probs = [], []
    while heap and len(paths) < budget:
        neg_p, _, path = heapq.heappop(heap)
        paths.append(path)
        probs.append(-neg_p)
        push_children(path)
        if len(path) <= gap_free_depth:
            push(path[:-1] + (path[-1] + 1,))
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

