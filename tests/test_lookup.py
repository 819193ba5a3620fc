"""Context lookup: the vectorised proposal against a plain one, the merge, the heads' config field, and that
the runtime and calibration both use it."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import loaded_tiny, tiny_heads, tiny_model
from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.checkpoint import HeadsFormatError
from medusa_runtime.heads import load_heads
from medusa_runtime.lookup import ContextIndex, ContextLookup, merge, propose
from medusa_runtime.spec import chain_tree
from treeopt.calibration import calibrate


def plain_proposal(seq: list[int], lookup: ContextLookup) -> int:
    """The definition, written as plainly as possible: the token after the most recent earlier occurrence of the
    longest suffix of length max_match..min_match."""
    for n in range(lookup.max_match, lookup.min_match - 1, -1):
        suffix = seq[len(seq) - n :] if len(seq) > n else None
        for s in range(len(seq) - n - 1, -1, -1):
            if suffix is not None and seq[s : s + n] == suffix:
                return seq[s + n]
    return -1


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=30), min_size=1, max_size=6),
       bounds=st.tuples(st.integers(1, 4), st.integers(0, 3)))
def test_propose_equals_the_plain_definition(rows, bounds):
    lookup = ContextLookup(bounds[0], bounds[0] + bounds[1])
    width = max(map(len, rows))
    seqs = torch.tensor([r + [7] * (width - len(r)) for r in rows])  # padded with a token that could match: ignored
    got = propose(seqs, torch.tensor([len(r) for r in rows]), lookup).tolist()
    assert got == [plain_proposal(r, lookup) for r in rows]


def test_propose_prefers_the_longest_then_the_latest_match():
    lookup = ContextLookup(1, 3)
    seq = torch.tensor([[1, 2, 3, 9, 2, 3, 8, 3, 2, 3]])
    assert propose(seq, torch.tensor([10]), lookup).tolist() == [8]  # "2 3" earlier at 1 (then 9) and at 4 (then 8)
    assert propose(seq, torch.tensor([8]), lookup).tolist() == [8]  # "...8 3": only "3" matches, last at 5, then 8
    assert propose(seq, torch.tensor([3]), lookup).tolist() == [-1]  # "1 2 3": nothing earlier
    assert propose(seq, torch.tensor([10]), ContextLookup(3, 3)).tolist() == [-1]  # "3 2 3" never occurred before


def test_propose_refuses_lengths_past_the_tokens():
    with pytest.raises(ValueError, match="exceeds"):
        propose(torch.tensor([[1, 2]]), torch.tensor([3]), ContextLookup())


def test_merge_puts_the_proposal_first_and_keeps_k():
    ranked = torch.tensor([[5, 6, 7], [5, 6, 7], [5, 6, 7], [5, 6, 7]])
    out = merge(ranked, torch.tensor([6, 9, -1, 7]))
    assert out.tolist() == [[6, 5, 7], [9, 5, 6], [5, 6, 7], [7, 5, 6]]


@pytest.mark.parametrize("bad", [(0, 2), (3, 2), (1, 17)])
def test_context_lookup_bounds(bad):
    with pytest.raises(ValueError, match="min_match"):
        ContextLookup(*bad)


def test_heads_config_round_trip_and_errors(tmp_path):
    model = tiny_model("llama", seed=0)
    heads = tiny_heads(model, num_heads=2, lookup=ContextLookup(2, 5))
    heads.save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["medusa_context_lookup"] == {"min_match": 2, "max_match": 5}
    assert load_heads(tmp_path, model).config.context_lookup == ContextLookup(2, 5)
    for value, message in (([2, 4], "must be an object"), ({"min_match": 2}, "max_match must be an integer"),
                           ({"min_match": 2, "max_match": 4, "n": 1}, "unknown keys"), ({"min_match": 3, "max_match": 2}, "min_match <=")):
        config["medusa_context_lookup"] = value
        (tmp_path / "config.json").write_text(json.dumps(config))
        with pytest.raises(HeadsFormatError, match=message) as err:
            load_heads(tmp_path, model)
        assert "config.json" in str(err.value) and "medusa_context_lookup" in str(err.value)
    del config["medusa_context_lookup"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert load_heads(tmp_path, model).config.context_lookup is None  # upstream configs: no lookup


PROMPTS = [[4 + i, 9 + 2 * i, 20 + i] for i in range(6)]


@pytest.fixture(scope="module")
def tiny():
    model = tiny_model("llama", seed=3)
    return model, loaded_tiny(model)


def test_calibration_ranks_the_proposal_first(tiny):
    """Wherever the context lookup proposes the true token, calibration records rank 0 for it, and the tiny model's
    answers repeat enough for that to happen often (so this test can fail)."""
    model, loaded = tiny
    lookup = ContextLookup(1, 3)
    stats = calibrate(loaded, tiny_heads(model, num_heads=3, std=0.3, lookup=lookup), PROMPTS, max_new_tokens=30, topk=4, progress=False)
    decoder = MedusaDecoder(model, None, None, loaded.eos_token_ids)
    checked = 0
    for prompt, rows in zip(PROMPTS, stats.rollouts):
        answer = decoder.generate(prompt, 30).tokens
        for t, row in enumerate(rows):
            for k, rank in enumerate(row):
                if t + k + 1 < len(answer) and plain_proposal(prompt + answer[: t + k + 1], lookup) == answer[t + k + 1]:
                    assert rank == 0
                    checked += 1
    assert checked > 20


def test_lookup_makes_the_runtime_accept_more(tiny):
    """The same heads with and without the lookup on the same chain: both lossless, the lookup takes fewer steps
    on the tiny model's repetitive answers."""
    model, loaded = tiny
    tokens, steps = {}, {}
    for name, lookup in (("without", None), ("with", ContextLookup(1, 3))):
        decoder = MedusaDecoder(model, tiny_heads(model, num_heads=3, std=0.3, lookup=lookup), chain_tree(3), loaded.eos_token_ids)
        results = [decoder.generate(p, 30) for p in PROMPTS]
        tokens[name], steps[name] = [r.tokens for r in results], sum(r.steps for r in results)
    assert tokens["with"] == tokens["without"]
    assert steps["with"] < steps["without"]


@settings(max_examples=150, deadline=None)
@given(chunks=st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=8), min_size=1, max_size=6),
       paths=st.lists(st.lists(st.integers(0, 3), max_size=4), min_size=1, max_size=4),
       bounds=st.tuples(st.integers(1, 3), st.integers(0, 2)))
def test_the_runtime_index_equals_propose_as_the_history_grows(chunks, paths, bounds):
    lookup = ContextLookup(bounds[0], bounds[0] + bounds[1])
    index, history = ContextIndex(lookup, chunks[0]), list(chunks[0])
    for chunk in chunks[1:] + [[]]:
        for path in paths:
            seq = history + path
            assert index.propose(path) == propose(torch.tensor([seq]), torch.tensor([len(seq)]), lookup).item()
        index.extend(chunk)
        history += chunk
