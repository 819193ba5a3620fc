"""Lossless decoding against Hugging Face greedy on tiny random models, for many random trees."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cases import HEADS, MODELS, random_trees
from conftest import hf_greedy
from medusa_runtime.hf_decode import hf_reference
from medusa_runtime.decoding import MedusaDecoder, PromptTooLongError
from medusa_runtime.sampling import SamplingConfig
from medusa_runtime.spec import TreeSpec, chain_tree


@pytest.mark.parametrize("arch", list(MODELS))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=random_trees(), prompt=st.lists(st.integers(4, 63), min_size=1, max_size=12), oracle=st.booleans())
def test_tree_decoding_equals_hf_greedy(arch, tree, prompt, oracle):
    model = MODELS[arch]
    reference = hf_greedy(model, prompt, 24, [])
    decoder = MedusaDecoder(model, HEADS[arch], tree, eos_token_ids=[])
    result = decoder.generate(prompt, 24, oracle=reference if oracle else None)
    assert result.tokens == reference
    assert sum(result.emitted_per_step) == 24 and result.steps == len(result.emitted_per_step)


def test_oracle_chain_accepts_everything():
    model = MODELS["llama"]
    reference = hf_greedy(model, [5, 6, 7], 40, [])
    result = MedusaDecoder(model, None, chain_tree(3), eos_token_ids=[]).generate([5, 6, 7], 40, oracle=reference)
    assert result.tokens == reference
    assert result.emitted_per_step == [1] + [4] * 9 + [3]  # 1 + 9*4 + 3 = 40: the last step is cut


def test_stops_exactly_at_max_new_tokens_mid_path():
    model = MODELS["llama"]
    reference = hf_greedy(model, [9, 10], 7, [])
    result = MedusaDecoder(model, None, chain_tree(3), eos_token_ids=[]).generate([9, 10], 7, oracle=hf_greedy(model, [9, 10], 20, []))
    assert result.tokens == reference and len(result.tokens) == 7 and result.emitted_per_step == [1, 4, 2]


def test_stops_exactly_at_eos_mid_path():
    model = MODELS["llama"]
    free = hf_greedy(model, [9, 10], 30, [])
    eos = free[5]  # pretend the 6th token is EOS: decoding must stop right after it, mid-path
    expected = hf_greedy(model, [9, 10], 30, [eos])
    assert expected == free[: free.index(eos) + 1]
    result = MedusaDecoder(model, None, chain_tree(3), eos_token_ids=[eos]).generate([9, 10], 30, oracle=free)
    assert result.tokens == expected and result.stop_reason == "eos"


def test_prompt_too_long_is_a_clear_error():
    decoder = MedusaDecoder(MODELS["llama"], None, TreeSpec([]), eos_token_ids=[])
    with pytest.raises(PromptTooLongError, match="exceeds the model's context of 256"):
        decoder.generate(list(range(4, 60)) * 4, 40)


def test_tree_deeper_than_heads_is_refused():
    with pytest.raises(ValueError, match="exceeds the 3 loaded heads"):
        MedusaDecoder(MODELS["llama"], HEADS["llama"], chain_tree(4), eos_token_ids=[])


def test_non_empty_tree_without_heads_or_oracle_is_refused():
    with pytest.raises(ValueError, match="needs Medusa heads"):
        MedusaDecoder(MODELS["llama"], None, chain_tree(2), eos_token_ids=[]).generate([4, 5], 5)


def test_typical_acceptance_is_seeded_and_respects_limits():
    model = MODELS["llama"]
    tree = TreeSpec([(0,), (1,), (0, 0), (0, 0, 0)])
    sampling = SamplingConfig(temperature=0.7, seed=3, acceptance="typical")
    a = MedusaDecoder(model, HEADS["llama"], tree, [], sampling).generate([4, 5, 6], 30)
    b = MedusaDecoder(model, HEADS["llama"], tree, [], sampling).generate([4, 5, 6], 30)
    assert a.tokens == b.tokens and len(a.tokens) == 30
    assert all(0 <= t < model.config.vocab_size for t in a.tokens)


def test_typical_acceptance_at_low_temperature_is_greedy():
    # with a near-zero temperature the distribution is one-hot: typical acceptance == greedy acceptance
    model = MODELS["qwen2"]
    reference = hf_greedy(model, [4, 9, 12], 20, [])
    sampling = SamplingConfig(temperature=1e-4, acceptance="typical")
    result = MedusaDecoder(model, HEADS["qwen2"], TreeSpec([(0,), (0, 0), (1,)]), [], sampling).generate([4, 9, 12], 20)
    assert result.tokens == reference


# ---------------------------------------------------------------- batches of prompts
@pytest.mark.parametrize("arch", list(MODELS))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=random_trees(), prompts=st.lists(st.lists(st.integers(4, 63), min_size=1, max_size=14), min_size=1, max_size=4),
       oracle=st.booleans(), max_new=st.integers(1, 20))
def test_batched_decoding_equals_each_prompts_own_greedy(arch, tree, prompts, oracle, max_new):
    model = MODELS[arch]
    references = [hf_greedy(model, p, max_new, []) for p in prompts]
    decoder = MedusaDecoder(model, HEADS[arch], tree, eos_token_ids=[])
    results = decoder.generate_batch(prompts, max_new, oracles=references if oracle else None)
    assert [r.tokens for r in results] == references
    assert all(sum(r.emitted_per_step) == max_new == len(r.tokens) for r in results)


def test_batched_rows_stop_independently_at_eos():
    model = MODELS["llama"]
    prompts = [[9, 10], [5, 6, 7, 8, 9, 10, 11], [20]]
    free = [hf_greedy(model, p, 30, []) for p in prompts]

    def ends(eos):  # where each row stops if ``eos`` ends answers
        return [answer.index(eos) + 1 if eos in answer else 30 for answer in free]

    # a token that ends the first row early (mid-path) and another row later
    eos = next(t for t in free[0][4:] if ends(t)[0] >= 5 and max(ends(t)) > ends(t)[0])
    expected = [hf_greedy(model, p, 30, [eos]) for p in prompts]
    assert [len(e) for e in expected] == ends(eos)
    seen = {row: [] for row in range(3)}
    results = MedusaDecoder(model, None, chain_tree(3), eos_token_ids=[eos]).generate_batch(
        prompts, 30, oracles=free, on_tokens=lambda row, tokens: seen[row].extend(tokens))
    assert [r.tokens for r in results] == expected == [seen[row] for row in range(3)]
    assert results[0].stop_reason == "eos"
    assert [r.steps for r in results] == [len(r.emitted_per_step) for r in results]
    assert max(r.steps for r in results) > results[0].steps  # a row that ended did not ride along


def test_finished_rows_leave_the_batch():
    """A row that ends (at EOS, mid-answer) leaves the batch and its cache row at once; the other goes on alone."""
    model = MODELS["llama"]
    decoder = MedusaDecoder(model, HEADS["llama"], TreeSpec([(0,), (1,), (0, 0)]), eos_token_ids=[])
    free = [hf_greedy(model, p, 12, []) for p in ([4, 5], [6, 7, 8])]
    eos = next(t for t in free[0][2:8] if t not in free[1])  # ends the first row early, never the second
    decoder.eos = {eos}
    sizes = []
    real_step = decoder.step
    decoder.step = lambda state, oracles=None: (sizes.append((state.batch_size, len(state.cache.lengths))), real_step(state, oracles))[1]
    results = decoder.generate_batch([[4, 5], [6, 7, 8]], 12)
    assert results[0].tokens == free[0][: free[0].index(eos) + 1] and results[1].tokens == free[1]
    assert all(b == cache_rows for b, cache_rows in sizes)  # a step runs over exactly the live rows
    assert sizes[0] == (2, 2) and sizes[-1] == (1, 1)  # both rows at first, the second alone at the end
    assert sum(b for b, _ in sizes) == results[0].steps - 1 + results[1].steps - 1  # a finished row costs no step
    short = decoder.generate_batch([[4, 5], [6, 7, 8]], 2)  # both rows end together: still correct
    assert [r.tokens for r in short] == [free[0][:2], free[1][:2]]


def test_batched_typical_acceptance_is_seeded_and_per_row():
    model = MODELS["llama"]
    tree = TreeSpec([(0,), (1,), (0, 0), (0, 0, 0)])
    sampling = SamplingConfig(temperature=0.7, seed=3, acceptance="typical")
    prompts = [[4, 5, 6], [7, 8], [9, 10, 11, 12]]
    a = MedusaDecoder(model, HEADS["llama"], tree, [], sampling).generate_batch(prompts, 25)
    b = MedusaDecoder(model, HEADS["llama"], tree, [], sampling).generate_batch(prompts, 25)
    assert [r.tokens for r in a] == [r.tokens for r in b] and all(len(r.tokens) == 25 for r in a)
    low = MedusaDecoder(model, HEADS["llama"], tree, [], SamplingConfig(temperature=1e-4, acceptance="typical")).generate_batch(prompts, 20)
    assert [r.tokens for r in low] == [hf_greedy(model, p, 20, []) for p in prompts]  # one-hot: each row is greedy


def test_batch_input_errors_are_clear():
    decoder = MedusaDecoder(MODELS["llama"], None, chain_tree(2), eos_token_ids=[])
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        decoder.generate_batch([[4], []], 5, oracles=[[1] * 5, [1] * 5])
    with pytest.raises(ValueError, match="2 oracle continuations for 1 prompts"):
        decoder.generate_batch([[4]], 5, oracles=[[1] * 5, [1] * 5])
    with pytest.raises(PromptTooLongError, match="exceeds the model's context of 256"):
        decoder.generate_batch([[4], list(range(4, 60)) * 4], 40, oracles=[[1] * 40] * 2)


# ---------------------------------------------------------------- sampled decoding: sample-and-match with keyed draws
@pytest.mark.parametrize("arch", list(MODELS))
@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(tree=random_trees(), prompt=st.lists(st.integers(4, 63), min_size=1, max_size=12), oracle=st.booleans(),
       temperature=st.sampled_from([0.3, 0.7, 1.0, 1.5]), top_k=st.sampled_from([0, 1, 5]), top_p=st.sampled_from([1.0, 0.9, 0.5]),
       seed=st.integers(0, 2**31), drafts=st.sampled_from(["mode", "coupled"]), tau=st.sampled_from([None, (0.5,), (2.0, 0.7, 1.0)]))
def test_sampled_tree_decoding_equals_plain_keyed_sampling(arch, tree, prompt, oracle, temperature, top_k, top_p, seed, drafts, tau):
    """Whatever the tree, the heads, the warpers and the draft order, the runtime emits exactly the text that plain
    sampling with the same keyed draws (Hugging Face generate with the same warpers and noise) emits for this seed."""
    model = MODELS[arch]
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, drafts=drafts, head_temperature=tau)
    reference = hf_reference(model, prompt, 24, [], sampling)
    decoder = MedusaDecoder(model, HEADS[arch], tree, [], sampling)
    result = decoder.generate(prompt, 24, oracle=reference if oracle else None)
    assert result.tokens == reference
    assert sum(result.emitted_per_step) == 24


@pytest.mark.parametrize("arch", ["llama", "qwen2-sequential-lookup", "mistral-sequential-prefix"])
@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(tree=random_trees(), prompts=st.lists(st.lists(st.integers(4, 63), min_size=1, max_size=14), min_size=1, max_size=4),
       max_new=st.integers(1, 20), seed=st.integers(0, 1000))
def test_batched_sampled_rows_each_equal_their_own_keyed_sampling(arch, tree, prompts, max_new, seed):
    model = MODELS[arch]
    sampling = SamplingConfig(temperature=1.0, top_p=0.9, seed=seed)
    prompts = prompts + prompts[:1]  # a prompt twice in one batch: the same key, the same text
    references = [hf_reference(model, p, max_new, [], sampling) for p in prompts]
    results = MedusaDecoder(model, HEADS[arch], tree, [], sampling).generate_batch(prompts, max_new)
    assert [r.tokens for r in results] == references


def test_a_seed_fixes_the_text_whatever_the_tree_and_another_seed_changes_it():
    model, heads = MODELS["llama"], HEADS["llama"]
    sampling = SamplingConfig(temperature=1.0, seed=7)
    plain = MedusaDecoder(model, None, TreeSpec([]), [], sampling).generate([4, 5, 6], 30).tokens
    tree = MedusaDecoder(model, heads, TreeSpec([(0,), (1,), (2,), (0, 0), (0, 1), (0, 0, 0)]), [], sampling).generate([4, 5, 6], 30)
    assert tree.tokens == plain and tree.steps < 30  # the tree accepted something and still emitted the same text
    other = MedusaDecoder(model, None, TreeSpec([]), [], SamplingConfig(temperature=1.0, seed=8)).generate([4, 5, 6], 30).tokens
    assert other != plain
    assert plain != hf_greedy(model, [4, 5, 6], 30, [])  # sampled, not greedy


def test_sampled_decoding_stops_exactly_at_eos():
    model = MODELS["llama"]
    sampling = SamplingConfig(temperature=1.0, seed=1)
    free = hf_reference(model, [9, 10], 30, [], sampling)
    eos = free[6]
    expected = hf_reference(model, [9, 10], 30, [eos], sampling)
    assert expected == free[: free.index(eos) + 1]
    result = MedusaDecoder(model, HEADS["llama"], chain_tree(3), [eos], sampling).generate([9, 10], 30, oracle=free)
    assert result.tokens == expected and result.stop_reason == "eos"


# ---------------------------------------------------------------- a queue through fixed slots (in-flight batching)
@pytest.mark.parametrize("arch", list(MODELS))
@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(tree=random_trees(), prompts=st.lists(st.lists(st.integers(4, 63), min_size=1, max_size=14), min_size=1, max_size=6),
       slots=st.integers(1, 3), limits=st.lists(st.integers(1, 16), min_size=6, max_size=6), sampled=st.booleans())
def test_served_queue_decodes_each_prompt_as_alone(arch, tree, prompts, slots, limits, sampled):
    """Prompts join the batch as rows free up, each with its own token limit; every one decodes exactly what it decodes
    alone (greedy, or keyed sampling), whatever it shared its steps with."""
    model = MODELS[arch]
    limits = limits[: len(prompts)]
    sampling = SamplingConfig(temperature=1.0, top_p=0.9, seed=3) if sampled else SamplingConfig()
    references = [hf_reference(model, p, n, [], sampling) for p, n in zip(prompts, limits)]
    results = MedusaDecoder(model, HEADS[arch], tree, [], sampling).serve(prompts, limits, slots)
    assert [r.tokens for r in results] == references
    assert all(sum(r.emitted_per_step) == len(r.tokens) for r in results)


def test_served_queue_admits_a_prompt_when_a_row_frees_and_never_exceeds_its_slots():
    model = MODELS["llama"]
    decoder = MedusaDecoder(model, HEADS["llama"], TreeSpec([(0,), (1,), (0, 0)]), eos_token_ids=[])
    sizes, ticks = [], iter(range(10_000))
    real_step = decoder.step
    decoder.step = lambda state, oracles=None: (sizes.append((state.batch_size, len(state.cache.lengths))), real_step(state, oracles))[1]
    prompts = [[4, 5], [6, 7, 8], [9], [10, 11, 12, 13], [14]]
    limits = [3, 12, 5, 8, 2]
    results = decoder.serve(prompts, limits, slots=2, clock=lambda: float(next(ticks)))
    assert [r.tokens for r in results] == [hf_greedy(model, p, n, []) for p, n in zip(prompts, limits)]
    assert max(b for b, _ in sizes) == 2 and all(b == rows for b, rows in sizes)  # two slots; a step runs over the live rows
    admitted = [r.admitted_s for r in results]
    assert admitted[0] == admitted[1] < admitted[2] < admitted[3] < admitted[4]  # later prompts wait for a free row
    assert results[2].admitted_s >= results[0].finished_s  # prompt 2 took the row prompt 0 freed
    assert all(r.admitted_s <= r.first_token_s <= r.finished_s for r in results)
    assert sum(b for b, _ in sizes) == sum(r.steps - 1 for r in results)  # every step served each live row once


def test_a_queue_of_mixed_prompt_lengths_decodes():
    model = MODELS["qwen2-sequential-lookup"]
    prompts = [list(range(4, 4 + n)) * 1 if n < 60 else [4 + i % 59 for i in range(n)] for n in (1, 200, 7, 120, 3)]
    results = MedusaDecoder(model, HEADS["qwen2-sequential-lookup"], TreeSpec([(0,), (0, 0), (1,)]), []).serve(prompts, 20, slots=2)
    assert [r.tokens for r in results] == [hf_greedy(model, p, 20, []) for p in prompts]


def test_serve_errors_are_clear():
    decoder = MedusaDecoder(MODELS["llama"], None, TreeSpec([]), eos_token_ids=[])
    with pytest.raises(ValueError, match="no prompts"):
        decoder.serve([], 5, slots=2)
    with pytest.raises(ValueError, match="--batch-size 0"):
        decoder.serve([[4]], 5, slots=0)
    with pytest.raises(ValueError, match="one token limit >= 1 per prompt"):
        decoder.serve([[4], [5]], [5], slots=1)
    with pytest.raises(PromptTooLongError, match="prompt 1 has 240 tokens"):
        decoder.serve([[4], list(range(4, 64)) * 4], 40, slots=1)
