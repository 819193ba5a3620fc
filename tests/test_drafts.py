"""Draft orders: mode drafts rank by the heads' logits; coupled drafts by logits / tau + the target's own keyed noise."""

import pytest
import torch

from cases import HEADS, MODELS
from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.drafts import DraftOrder
from medusa_runtime.draws import KeyedNoise, draw, keyed_gumbel
from medusa_runtime.sampling import SamplingConfig, SamplingError
from medusa_runtime.spec import TreeSpec

V = 50
CPU = torch.device("cpu")


def test_coupled_first_guess_is_the_targets_draw_when_the_head_is_the_target():
    """A head whose logits equal the target's, at the target's temperature, guesses exactly the target's keyed draw
    at every position and row (the coupling): mode drafts guess its argmax, which the draw often is not."""
    torch.manual_seed(0)
    sampling = SamplingConfig(temperature=0.8, seed=3)
    noise = KeyedNoise(sampling.seed, V, CPU)
    logits = torch.randn(4, 3, V) * 2  # [B rows, 3 heads, V]
    keys, roots = [11, 12, 11, 99], [5, 9, 40, 7]
    order = DraftOrder(sampling, 3, None, CPU).heads(noise, keys, roots, 3)
    coupled = order(logits).argmax(-1)  # [B, 3]
    for k in range(3):
        target = draw(logits[:, k], sampling, noise, keys, [p + k + 1 for p in roots])
        assert torch.equal(coupled[:, k], target)
    mode = logits.argmax(-1)
    assert not torch.equal(mode, coupled)


def test_mode_drafts_leave_the_logits_alone():
    assert DraftOrder(SamplingConfig(), 3, None, CPU).heads(None, [1], [0], 3) is None
    assert DraftOrder(SamplingConfig(temperature=1.0, drafts="mode"), 3, None, CPU).head(None, [1], [0], 2) is None


def test_head_temperatures_and_draft_columns():
    """Each head is scaled by its own temperature and reads only the draft vocabulary's columns of the noise."""
    sampling = SamplingConfig(temperature=1.0, seed=1, head_temperature=(0.5, 2.0))
    columns = torch.tensor([3, 7, 1, 20])
    noise = KeyedNoise(1, V, CPU)
    logits = torch.randn(2, 2, 4)
    scores = DraftOrder(sampling, 2, columns, CPU).heads(noise, [4, 5], [10, 20], 2)(logits)
    for b, (key, root) in enumerate(zip([4, 5], [10, 20])):
        for k, tau in enumerate((0.5, 2.0)):
            expected = logits[b, k] / tau + keyed_gumbel(1, key, root + k + 1, V)[columns]
            assert torch.allclose(scores[b, k], expected)
    single = DraftOrder(sampling, 2, columns, CPU).head(noise, [4, 5], [10, 20], 1)(logits[:, 1:2])
    assert torch.allclose(single[:, 0], scores[:, 1])


def test_calibration_order_equals_the_runtime_order():
    """``along`` (one answer, row t's head k at position first + t + k) gives what ``heads`` gives a row whose root
    sits at first - 1 + t: calibration ranks exactly as the runtime does."""
    sampling = SamplingConfig(temperature=0.7, seed=2)
    drafts = DraftOrder(sampling, 3, None, CPU)
    noise = KeyedNoise(2, V, CPU)
    logits = torch.randn(6, 3, V)
    along = drafts.along(noise, 77, 30, 6, 3)(logits)
    runtime = drafts.heads(noise, [77] * 6, [29 + t for t in range(6)], 3)(logits)
    assert torch.equal(along, runtime)


def test_keyed_noise_memo_returns_the_keyed_rows_and_stays_bounded():
    noise = KeyedNoise(4, V, CPU)
    first = noise.gumbel([1, 2], [3, 4])
    assert torch.equal(first[1], keyed_gumbel(4, 2, 4, V))
    for position in range(KeyedNoise.MEMO + 10):
        noise.gumbel([9], [position])
    assert len(noise._memo) == KeyedNoise.MEMO
    assert torch.equal(noise.gumbel([1], [3])[0], keyed_gumbel(4, 1, 3, V))  # evicted, drawn again: the same


def test_draft_options_are_checked():
    for kwargs, option in (({"drafts": "best"}, "--drafts"), ({"temperature": 1.0, "head_temperature": (0.0,)}, "--head-temperature"),
                           ({"temperature": 1.0, "head_temperature": (-1.0, 1.0)}, "--head-temperature"),
                           ({"temperature": 1.0, "drafts": "coupled", "keyed": False}, "keyed")):
        with pytest.raises(SamplingError, match=option):
            SamplingConfig(**kwargs)
    assert SamplingConfig().draft_rule == "mode" and SamplingConfig(drafts="coupled").draft_rule == "mode"  # greedy
    assert SamplingConfig(temperature=0.7).draft_rule == "coupled"
    assert SamplingConfig(temperature=0.7, keyed=False).draft_rule == "mode"
    assert SamplingConfig(drafts="coupled", head_temperature=(1.0,)).ignored_options() == ["--drafts coupled", "--head-temperature"]
    with pytest.raises(SamplingError, match="2 temperatures for 3 heads"):
        SamplingConfig(temperature=1.0, head_temperature=(1.0, 2.0)).head_temperatures(3)
    t = SamplingConfig(temperature=0.7)
    assert t.draft_settings() == {"rule": "coupled", "head_temperature": [0.7]}
    assert t.with_drafts({"rule": "coupled", "head_temperature": [0.5, 0.6]}).head_temperatures(2) == [0.5, 0.6]
    assert t.with_drafts({"rule": "mode"}).draft_rule == "mode" and t.with_drafts(None) == t


@pytest.mark.parametrize("arch", ["llama", "qwen2-sequential-lookup", "llama-draft-vocab"])
def test_coupled_and_mode_drafts_emit_the_same_text_with_different_trees_of_guesses(arch):
    """The draft order changes which tokens the tree verifies, never the text."""
    model, heads = MODELS[arch], HEADS[arch]
    tree = TreeSpec([(0,), (1,), (2,), (0, 0), (1, 0), (0, 1), (0, 0, 0)])
    prompts = [[4, 5, 6], [9, 10, 11, 12]]
    out = {}
    for rule in ("mode", "coupled"):
        sampling = SamplingConfig(temperature=1.0, seed=3, drafts=rule)
        out[rule] = MedusaDecoder(model, heads, tree, [], sampling).generate_batch(prompts, 24)
    assert [r.tokens for r in out["mode"]] == [r.tokens for r in out["coupled"]]
    assert [r.emitted_per_step for r in out["mode"]] != [r.emitted_per_step for r in out["coupled"]]
