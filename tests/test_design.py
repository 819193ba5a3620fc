"""design_tree for an engine target: vLLM's chain, its depth chosen like any budget, its prediction the chain's replay."""

import pytest

from test_builder import random_stats
from treeopt.choice import choose_tree
from treeopt.design import TreeRequest, design_tree
from treeopt.plan import plan_batches
from treeopt.stats import replay_tokens_per_step
from treeopt.tuning import LatencyProfile


def chain(depth: int) -> list[tuple[int, ...]]:
    return [(0,) * d for d in range(1, depth + 1)]


@pytest.mark.parametrize("folds", [0, 4])
@pytest.mark.parametrize("seed", range(3))
def test_vllm_builds_a_chain_whose_prediction_is_the_replay_of_that_chain(seed, folds):
    """--for vllm: ranks < 1, so the n-path tree is the chain of depth n; the same chain in every fold, so the
    cross-validated prediction is the replay of the chain on the stats too (each prompt replayed once)."""
    stats = random_stats(seed, num_heads=3, topk=2, prompts=8, length=60)
    for depth in range(1, 4):
        spec = design_tree(stats, TreeRequest(depth, target="vllm", folds=folds)).spec
        assert spec.paths == chain(depth) and spec.meta["max_children"] == 1
        assert spec.meta["expected_tokens_per_step"] == pytest.approx(replay_tokens_per_step(stats, chain(depth)), abs=1e-4)
    # an unrestricted build of the same size is another tree (ranks > 0 pay on these stats)
    assert any(p[-1] > 0 for p in design_tree(stats, TreeRequest(3, folds=folds)).spec.paths)


def profile(batch: int, plain: float, per_node: float) -> LatencyProfile:
    sizes = list(range(1, 9))
    return LatencyProfile("cpu", "float32", sizes, [plain + per_node * (n - 1) for n in sizes], plain, {}, batch_size=batch)


def test_vllm_depth_is_chosen_from_latency_per_batch_size_down_to_speculation_off():
    """plan --for vllm: a chain per batch size, as deep as the latency pays for; where a verified token costs as much
    as a step (a large batch), depth 0: speculation off."""
    stats = random_stats(1, num_heads=3, topk=2, prompts=8, length=60)
    latencies = {1: profile(1, 10.0, 0.2), 8: profile(8, 10.0, 10.0)}
    plan = plan_batches(stats, latencies, TreeRequest(None, target="vllm", folds=0), "static")
    depths = {r.batch_size: r.paths for r in plan.rows}
    assert depths[1] >= 2 and depths[8] == 0 and plan.switch_off_batch_size == 8
    auto = choose_tree(stats, TreeRequest(None, target="vllm", folds=0), latencies[1]).spec
    assert auto.paths == chain(len(auto.paths)) and len(auto.paths) == depths[1]
