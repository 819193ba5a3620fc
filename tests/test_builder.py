"""The greedy builder is optimal: it equals brute force over all valid trees on small random stats."""

import itertools
import random

import pytest

from treeopt.builder import BuildError, build_tree, path_probability_fn
from treeopt.stats import CalibrationStats


def random_stats(seed: int, num_heads=3, topk=3, prompts=4, length=30) -> CalibrationStats:
    rng = random.Random(seed)
    rollouts = []
    for _ in range(prompts):
        rows = []
        for _ in range(length):
            # correlated heads: once a head misses, deeper heads tend to miss too
            row, alive = [], True
            for _k in range(num_heads):
                alive = alive and rng.random() < 0.7
                row.append(rng.randrange(topk) if alive and rng.random() < 0.8 else -1)
            rows.append(row)
        rollouts.append(rows)
    return CalibrationStats(num_heads, topk, rollouts, [length] * prompts)


def all_valid_trees(candidates, size):
    for combo in itertools.combinations(candidates, size):
        chosen = set(combo)
        if all(len(p) == 1 or p[:-1] in chosen for p in combo):
            yield combo


@pytest.mark.parametrize("objective", ["empirical", "independent"])
@pytest.mark.parametrize("seed", range(4))
def test_greedy_equals_brute_force(objective, seed):
    stats = random_stats(seed, num_heads=3, topk=2)
    prob = path_probability_fn(stats, objective)
    candidates = [p for d in range(1, 4) for p in itertools.product(range(2), repeat=d)]
    for size in range(1, 6):
        best = max(sum(prob(p) for p in tree) for tree in all_valid_trees(candidates, size))
        built = build_tree(stats, size, objective)
        assert sum(prob(p) for p in built.paths) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("objective", ["empirical", "independent"])
def test_every_prefix_is_a_valid_tree_and_optimal(objective):
    """Each prefix of one build is a valid tree whose value equals brute force over every valid tree of its size."""
    stats = random_stats(7, num_heads=3, topk=2)
    prob = path_probability_fn(stats, objective)
    candidates = [p for d in range(1, 4) for p in itertools.product(range(2), repeat=d)]
    built = build_tree(stats, 9, objective)
    for n in range(1, 10):
        head = set(built.paths[:n])
        assert all(len(p) == 1 or p[:-1] in head for p in head)
        best = max(sum(prob(p) for p in tree) for tree in all_valid_trees(candidates, n))
        assert sum(prob(p) for p in built.paths[:n]) == pytest.approx(best, abs=1e-12)


def test_ties_break_deterministically():
    # every path equally likely: ties break by depth, then by the path itself
    rows = [[0, 0], [1, 1], [0, 1], [1, 0]] * 3
    stats = CalibrationStats(2, 2, [rows], [len(rows)])
    assert build_tree(stats, 6, "empirical").paths == [(0,), (1,), (0, 0), (0, 1), (1, 0), (1, 1)]
    assert build_tree(stats, 6, "empirical").paths == build_tree(stats, 6, "empirical").paths


def test_independent_objective_matches_hand_computation():
    # head 1: rank 0 right 3/4, rank 1 right 1/4; head 2: rank 0 right 1/3 of its 3 valid positions
    rows = [[0, 0], [0, 1], [1, -1], [0, -1]]
    stats = CalibrationStats(2, 2, [rows], [5])
    acc = stats.accuracy()
    assert acc[0] == [3 / 4, 1 / 4]
    assert acc[1] == [1 / 3, 1 / 3]
    built = build_tree(stats, 3, "independent")
    assert built.paths == [(0,), (1,), (0, 0)]
    assert built.probabilities == pytest.approx([0.75, 0.25, 0.25])


def test_max_depth_and_children_are_respected():
    stats = random_stats(3, num_heads=3, topk=3, prompts=8)
    built = build_tree(stats, 6, max_depth=2, max_children=2)
    assert all(len(p) <= 2 and max(p) < 2 for p in built.paths)


def test_budget_beyond_the_stats_is_a_clear_error():
    stats = CalibrationStats(2, 2, [[[0, -1], [0, 0]]], [3])
    with pytest.raises(BuildError, match="support only 2 paths"):
        build_tree(stats, 5)
    with pytest.raises(BuildError, match="--max-depth 3 exceeds the 2 heads"):
        build_tree(stats, 1, max_depth=3)
