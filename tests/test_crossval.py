"""Cross-validation over prompts (crossval.py), the shrunk objective and gap-free trees (builder.py),
and the designed spec's predictions (design.py)."""

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_builder import all_valid_trees, random_stats
from treeopt.builder import build_tree, path_probability_fn
from treeopt.crossval import CrossValidationError, bootstrap_interval, cross_validate, prompt_folds
from treeopt.design import TreeRequest, design_tree
from treeopt.evaluate import evaluate_tree
from treeopt.stats import CalibrationStats, replay_per_prompt, replay_steps


def test_folds_partition_the_prompts_that_generated_tokens():
    stats = random_stats(0, prompts=11)
    folds = prompt_folds(stats, 4)
    assert sorted(i for f in folds for i in f) == list(range(11))
    assert folds[1] == [1, 5, 9]
    # prompts that generated nothing are left out, and no fold is left with only such prompts
    stats.new_tokens = [n if i % 2 == 0 else 0 for i, n in enumerate(stats.new_tokens)]
    assert prompt_folds(stats, 2) == [[0, 4, 8], [2, 6, 10]]


def test_one_fold_is_refused():
    with pytest.raises(CrossValidationError, match="--folds 1"):
        cross_validate(random_stats(0, prompts=4), [3], "empirical", folds=1)


def test_cross_validation_replays_each_fold_with_a_tree_built_without_it():
    stats = random_stats(3, num_heads=3, topk=3, prompts=6, length=25)
    cv = cross_validate(stats, [4, 9], "empirical", folds=3)
    for n in (4, 9):
        tokens = steps = 0
        for fold in range(3):  # prompt i is held out in fold i % 3, written out by hand
            train = CalibrationStats(3, 3, [r for i, r in enumerate(stats.rollouts) if i % 3 != fold],
                                     [t for i, t in enumerate(stats.new_tokens) if i % 3 != fold])
            test = CalibrationStats(3, 3, [r for i, r in enumerate(stats.rollouts) if i % 3 == fold],
                                    [t for i, t in enumerate(stats.new_tokens) if i % 3 == fold])
            t, s = replay_steps(test, build_tree(train, n, "empirical", strict=False).paths)
            tokens, steps = tokens + t, steps + s
        assert cv.tokens_per_step(n) == tokens / steps


def test_a_path_only_one_prompt_takes_is_worth_nothing_out_of_sample():
    # prompt i only ever sees head-1 rank i: in-sample the best 1-path tree looks good, held out it never hits
    stats = CalibrationStats(1, 5, [[[i]] * 20 for i in range(5)], [21] * 5)
    for objective in ("empirical", "shrunk"):
        spec = design_tree(stats, TreeRequest(1, objective=objective, folds=5)).spec
        assert spec.meta["in_sample_tokens_per_step"] > 1.1
        assert spec.meta["expected_tokens_per_step"] == 1.0


def test_shrunk_spans_empirical_to_independent():
    stats = random_stats(5, num_heads=3, topk=3)
    paths = [p for d in (1, 2, 3) for p in itertools.product(range(3), repeat=d)]
    empirical = path_probability_fn(stats, "empirical")
    independent = path_probability_fn(stats, "independent")
    none = path_probability_fn(stats, "shrunk", 0.0)
    huge = path_probability_fn(stats, "shrunk", 1e12)
    for p in paths:
        assert none(p) == pytest.approx(empirical(p), abs=1e-12)
        assert huge(p) == pytest.approx(independent(p), abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), strength=st.sampled_from([0.5, 3.0, 30.0]))
def test_shrunk_child_never_beats_its_parent(seed, strength):
    stats = random_stats(seed, num_heads=3, topk=3, prompts=2, length=15)
    prob = path_probability_fn(stats, "shrunk", strength)
    for p in itertools.product(range(3), repeat=3):
        assert prob(p) <= prob(p[:2]) <= prob(p[:1]) <= 1.0


@pytest.mark.parametrize("seed", range(3))
def test_shrunk_greedy_equals_brute_force(seed):
    stats = random_stats(seed, num_heads=3, topk=2)
    prob = path_probability_fn(stats, "shrunk", 4.0)
    candidates = [p for d in range(1, 4) for p in itertools.product(range(2), repeat=d)]
    for size in range(1, 6):
        best = max(sum(prob(p) for p in tree) for tree in all_valid_trees(candidates, size))
        built = build_tree(stats, size, "shrunk", strength=4.0)
        assert sum(prob(p) for p in built.paths) == pytest.approx(best, abs=1e-12)


def has_sibling_gap(paths) -> bool:
    present = set(paths)
    return any(p[-1] > 0 and p[:-1] + (p[-1] - 1,) not in present for p in paths)


@pytest.mark.parametrize("seed", range(6))
def test_gap_free_trees_have_siblings_ranked_0_to_k(seed):
    """gap_free_depth=2 on 2 heads: no gaps anywhere."""
    # rank 1 is made more likely than rank 0, so the unconstrained tree has gaps and the gap-free one must not
    rng = random.Random(seed)
    rows = [[rng.choice([1, 1, 1, 0, 2, -1]), rng.choice([1, 0, 2, -1])] for _ in range(200)]
    stats = CalibrationStats(2, 3, [rows], [201])
    assert has_sibling_gap(build_tree(stats, 1, "empirical").paths)
    for n in range(1, 9):
        built = build_tree(stats, n, "empirical", gap_free_depth=2)
        assert len(built.paths) == n and not has_sibling_gap(built.paths)
        assert all(len(p) == 1 or p[:-1] in set(built.paths) for p in built.paths)


def test_target_limits_ranks_and_gaps():
    stats = random_stats(1, num_heads=2, topk=20, prompts=4, length=60)
    medusa = design_tree(stats, TreeRequest(15, objective="shrunk", target="medusa", folds=2)).spec
    assert max(r for p in medusa.paths for r in p) < 10
    trtllm = design_tree(stats, TreeRequest(15, objective="shrunk", target="trtllm", folds=2)).spec
    assert max(r for p in trtllm.paths for r in p) < 16 and not has_sibling_gap([p for p in trtllm.paths if len(p) == 1])


@pytest.mark.parametrize("folds", [0, 3, 4])
def test_evaluate_reruns_the_build_s_own_procedure(folds):
    stats = random_stats(9, num_heads=3, topk=3, prompts=8, length=30)
    stats.provenance = {"model": "m"}
    spec = design_tree(stats, TreeRequest(7, folds=folds)).spec
    evaluated = evaluate_tree(spec, stats)
    assert evaluated["cross_validated_tokens_per_step"] == spec.meta["expected_tokens_per_step"]
    assert evaluated["predicted_tokens_per_step"] == spec.meta["in_sample_tokens_per_step"]


def test_spec_prediction_is_the_cross_validated_one_and_evaluate_agrees():
    stats = random_stats(9, num_heads=3, topk=3, prompts=8, length=30)
    stats.provenance = {"model": "m"}
    spec = design_tree(stats, TreeRequest(7, folds=4)).spec
    cv = spec.meta["cross_validation"]
    assert spec.meta["expected_tokens_per_step"] == cv["tokens_per_step"]
    assert spec.meta["in_sample_tokens_per_step"] == round(replay_steps(stats, spec.paths)[0] / replay_steps(stats, spec.paths)[1], 4)
    assert cv["interval_90"][0] <= cv["tokens_per_step"] <= cv["interval_90"][1]
    assert 0 <= cv["strength_spread"] < 0.5
    evaluated = evaluate_tree(spec, stats)
    assert evaluated["cross_validated_tokens_per_step"] == spec.meta["expected_tokens_per_step"]
    other = random_stats(10, num_heads=3, topk=3, prompts=8, length=30)
    other.provenance = {"model": "another run"}
    assert evaluate_tree(spec, other)["cross_validated_tokens_per_step"] == evaluate_tree(spec, other)["predicted_tokens_per_step"]


def test_bootstrap_interval_brackets_the_pooled_ratio():
    stats = random_stats(2, num_heads=3, topk=3, prompts=10, length=30)
    per_prompt = replay_per_prompt(stats, [(0,), (1,), (0, 0)])
    low, high = bootstrap_interval(per_prompt)
    pooled = sum(t for t, _ in per_prompt) / sum(s for _, s in per_prompt)
    assert low < pooled < high
