"""Calibration on a tiny model, and replay of any tree equals what the runtime measures."""

import pytest

from conftest import loaded_tiny, tiny_heads, tiny_model
from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.lookup import ContextLookup
from medusa_runtime.sampling import SamplingConfig
from medusa_runtime.spec import TreeSpec
from treeopt.builder import build_tree
from treeopt.calibration import calibrate
from treeopt.stats import load_stats, replay_steps

PROMPTS = [[4 + i, 9 + 2 * i, 20 + i] for i in range(6)]


@pytest.fixture(scope="module", params=["plain", "root-conditioned", "sequential", "plain+lookup", "sequential+lookup",
                                        "sequential+prefix"])
def setup(request):
    model = tiny_model("llama", seed=3)
    kind, extra = request.param.partition("+")[::2]
    heads = tiny_heads(model, num_heads=3, std=0.3, root=kind == "root-conditioned", sequential=kind == "sequential",
                       lookup=ContextLookup(1, 3) if extra == "lookup" else None, prefix=extra == "prefix")
    loaded = loaded_tiny(model)
    return loaded, heads, calibrate(loaded, heads, PROMPTS, max_new_tokens=30, topk=4, progress=False)


def test_stats_shapes_and_round_trip(setup, tmp_path):
    _, _, stats = setup
    assert len(stats.rollouts) == len(PROMPTS)
    assert all(len(rows) == n for rows, n in zip(stats.rollouts, stats.new_tokens))
    assert all(-1 <= r < 4 for rows in stats.rollouts for row in rows for r in row)
    stats.save(tmp_path / "s.json")
    again = load_stats(tmp_path / "s.json")
    assert again.rollouts == stats.rollouts and again.accuracy() == stats.accuracy()
    assert again.prompt_tokens == stats.prompt_tokens == [len(p) for p in PROMPTS]  # what a batch's prefill costs


@pytest.mark.parametrize("tree", [
    TreeSpec([]),
    TreeSpec([(0,), (0, 0), (0, 0, 0)]),
    TreeSpec([(0,), (1,), (2,), (0, 0), (1, 0), (0, 1), (0, 0, 0)]),
])
def test_replay_equals_runtime(setup, tree):
    loaded, heads, stats = setup
    decoder = MedusaDecoder(loaded.model, heads, tree, loaded.eos_token_ids)
    results = [decoder.generate(p, 30) for p in PROMPTS]
    tokens, steps = replay_steps(stats, tree.paths)
    assert tokens == sum(len(r.tokens) for r in results)
    assert steps == sum(r.steps for r in results)


def test_replay_of_a_built_tree_equals_runtime(setup):
    loaded, heads, stats = setup
    built = build_tree(stats, 8)
    decoder = MedusaDecoder(loaded.model, heads, TreeSpec(built.paths), loaded.eos_token_ids)
    results = [decoder.generate(p, 30) for p in PROMPTS]
    assert replay_steps(stats, built.paths) == (sum(len(r.tokens) for r in results), sum(r.steps for r in results))
    assert sum(r.steps for r in results) < sum(len(r.tokens) for r in results)  # the heads do help here


SAMPLED = SamplingConfig(temperature=1.0, top_p=0.9, seed=5)


@pytest.fixture(scope="module", params=["plain/runtime/coupled", "sequential+lookup/batched/coupled", "plain/runtime/mode",
                                        "sequential/batched/coupled 0.5,2,1"])
def sampled(request):
    """Stats calibrated for sampling at temperature 1.0, top-p 0.9 (rollouts with the runtime's keyed draws), the
    guesses ranked as coupled drafts (the head temperature fitted, or given) or mode drafts."""
    model = tiny_model("llama", seed=3)
    kinds, rollout, drafts = request.param.split("/")
    kind, extra = kinds.partition("+")[::2]
    rule, _, taus = drafts.partition(" ")
    heads = tiny_heads(model, num_heads=3, std=0.3, sequential=kind == "sequential", lookup=ContextLookup(1, 3) if extra else None)
    loaded = loaded_tiny(model)
    sampling = SamplingConfig(temperature=1.0, top_p=0.9, seed=5, drafts=rule,
                              head_temperature=tuple(map(float, taus.split(","))) if taus else None)
    stats = calibrate(loaded, heads, PROMPTS, max_new_tokens=30, topk=4, progress=False, rollout=rollout, sampling=sampling)
    return loaded, heads, stats


@pytest.mark.parametrize("tree", [TreeSpec([(0,), (0, 0), (0, 0, 0)]), TreeSpec([(0,), (1,), (2,), (0, 0), (1, 0), (0, 1), (0, 0, 0)])])
def test_replay_of_sampled_stats_equals_the_sampled_runtime(sampled, tree):
    """Under sample-and-match with keyed draws the runtime decodes the calibration's own rollouts, so the replay of
    any tree on sampled stats is exactly what the runtime measures at that temperature and seed."""
    loaded, heads, stats = sampled
    assert stats.sampling() == SAMPLED.settings() == stats.provenance["sampling"]
    decoder = MedusaDecoder(loaded.model, heads, tree, loaded.eos_token_ids, SAMPLED.with_drafts(stats.provenance["drafts"]))
    results = [decoder.generate(p, 30) for p in PROMPTS]
    assert replay_steps(stats, tree.paths) == (sum(len(r.tokens) for r in results), sum(r.steps for r in results))
    greedy = MedusaDecoder(loaded.model, heads, tree, loaded.eos_token_ids)
    assert [r.tokens for r in results] != [greedy.generate(p, 30).tokens for p in PROMPTS]  # sampled, not greedy text


def test_sampled_stats_differ_from_greedy_stats(sampled):
    loaded, heads, stats = sampled
    greedy = calibrate(loaded, heads, PROMPTS, max_new_tokens=30, topk=4, progress=False)
    assert greedy.sampling() == {"temperature": 0.0} and greedy.rollouts != stats.rollouts


def test_provenance_that_contradicts_the_sampling_is_refused(sampled):
    loaded, heads, _ = sampled
    with pytest.raises(ValueError, match="provenance says"):
        calibrate(loaded, heads, PROMPTS[:1], 5, 4, {"sampling": {"temperature": 0.0}}, progress=False, sampling=SAMPLED)


def test_chain_conditionals_count_top1_paths():
    from treeopt.stats import CalibrationStats

    # rank rows [head1, head2, head3] at 6 positions: head 1 right at 4, heads 1+2 at 2, heads 1-3 at 1
    rows = [[0, 0, 0], [0, 0, 2], [0, 1, 0], [0, -1, -1], [1, 0, 0], [-1, 0, 0]]
    stats = CalibrationStats(num_heads=3, topk=4, rollouts=[rows], new_tokens=[6])
    assert stats.chain_conditionals() == [2 / 4, 1 / 2]
    assert CalibrationStats(num_heads=2, topk=4, rollouts=[[[1, 0]]], new_tokens=[1]).chain_conditionals() == [0.0]


def test_coupled_stats_record_the_rule_and_the_fitted_head_temperature(sampled):
    """Coupled calibration without a head temperature fits one on its own prompts and records it with the figures
    behind the choice; a given one is recorded as given; mode drafts record the rule only."""
    _, _, stats = sampled
    drafts = stats.provenance["drafts"]
    assert drafts["rule"] in ("coupled", "mode")
    if drafts["rule"] == "mode":
        assert drafts == {"rule": "mode"}
    elif "fit" in drafts:
        fit = drafts["fit"]
        assert len(fit["temperatures"]) == stats.num_heads and set(fit["temperatures"]) <= set(fit["grid"])
        assert drafts["head_temperature"] == (fit["temperatures"] if fit["per_head"] else fit["temperatures"][:1])
        assert set(fit["held_out"]) == {"one", "per_head"} and fit["scores"]["chosen"] >= max(
            v for k, v in fit["scores"].items() if k != "chosen") - 1e-9
    else:
        assert drafts["head_temperature"] == [0.5, 2.0, 1.0]


def test_coupled_ranks_differ_from_mode_ranks(sampled):
    """The coupled order is another order: on the same rollouts its ranks are not the mode ranks."""
    loaded, heads, stats = sampled
    if stats.provenance["drafts"]["rule"] != "coupled":
        pytest.skip("mode drafts")
    sampling = SAMPLED.with_drafts({"rule": "mode"})
    mode = calibrate(loaded, heads, PROMPTS, max_new_tokens=30, topk=4, progress=False,
                     rollout=stats.provenance["rollout"], sampling=sampling)
    assert mode.new_tokens == stats.new_tokens and mode.rollouts != stats.rollouts
