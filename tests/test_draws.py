"""Warpers as Hugging Face applies them, keyed Gumbel noise, and the keyed plain sampler."""

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from cases import MODELS
from medusa_runtime.hf_decode import hf_generate, hf_reference
from medusa_runtime.draws import FreshNoise, KeyedNoise, TOP_P_FIRST, keyed_gumbel, prompt_key, warp
from medusa_runtime.sampling import SamplingConfig


def hf_warpers(s: SamplingConfig) -> LogitsProcessorList:
    """What generate(do_sample=True, ...) builds for these settings, in its order."""
    processors = [TemperatureLogitsWarper(s.temperature)]
    if s.top_k:
        processors.append(TopKLogitsWarper(s.top_k))
    if s.top_p < 1:
        processors.append(TopPLogitsWarper(s.top_p))
    return LogitsProcessorList(processors)


@pytest.mark.parametrize("scale", [0.05, 1.0, 8.0])  # flat (top-p widens past its first 64 tokens to the whole vocabulary), spread, peaked
@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 0.9), (0.7, 0, 0.5), (1.3, 0, 0.99), (1.0, 20, 1.0), (0.5, 5, 0.8),
                                                     (1.0, 1, 1.0), (2.0, 0, 0.05), (1.0, 300, 0.95)])
def test_warp_equals_hugging_face_warpers(scale, temperature, top_k, top_p):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 3000, generator=g) * scale
    s = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    ours, theirs = warp(logits, s), hf_warpers(s)(None, logits.clone())
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))  # the same tokens kept
    assert torch.equal(ours[~torch.isinf(ours)], theirs[~torch.isinf(theirs)])
    if top_p < 1 and scale < 0.1 and not 0 < top_k <= TOP_P_FIRST:
        assert (~torch.isinf(ours)).sum(-1).min() > TOP_P_FIRST  # this case did exercise the widening


def test_warp_keeps_the_batch_shape():
    logits = torch.randn(2, 3, 500)
    s = SamplingConfig(temperature=0.9, top_k=50, top_p=0.7)
    assert torch.equal(warp(logits, s), warp(logits.reshape(6, 500), s).reshape(2, 3, 500))


def test_keyed_noise_depends_on_seed_key_and_position_only():
    a = keyed_gumbel(1, prompt_key([4, 5]), 9, 1000)
    assert torch.equal(a, keyed_gumbel(1, prompt_key([4, 5]), 9, 1000))
    for other in (keyed_gumbel(2, prompt_key([4, 5]), 9, 1000), keyed_gumbel(1, prompt_key([4, 6]), 9, 1000),
                  keyed_gumbel(1, prompt_key([4, 5]), 10, 1000)):
        assert not torch.equal(a, other)
    rows = KeyedNoise(1, 1000, torch.device("cpu")).gumbel([prompt_key([4, 5]), prompt_key([4, 5])], [9, 10])
    assert torch.equal(rows[0], a) and not torch.equal(rows[1], a)
    # standard Gumbel: mean is the Euler-Mascheroni constant, variance pi^2 / 6
    many = keyed_gumbel(3, 1, 1, 200_000).double()
    assert abs(many.mean() - 0.5772) < 0.01 and abs(many.var() - 1.6449) < 0.02


def test_fresh_noise_differs_at_every_call_and_restarts_with_its_seed():
    noise = FreshNoise(5, 100, torch.device("cpu"))
    first, second = noise.gumbel([0, 0], [1, 1]), noise.gumbel([0, 0], [1, 1])
    assert not torch.equal(first[0], first[1]) and not torch.equal(first, second)
    assert torch.equal(FreshNoise(5, 100, torch.device("cpu")).gumbel([0, 0], [1, 1]), first)


def test_keyed_sampler_reads_positions_past_left_padding():
    """In a left-padded batch each row draws with its own prompt's key and positions: the same text as alone."""
    model = MODELS["llama"]
    s = SamplingConfig(temperature=1.0, top_k=10, seed=4)
    prompts = [[4, 5, 6, 7, 8], [9], [10, 11]]
    batched = hf_generate(model, prompts, 12, [], s, keyed=True)
    assert batched == [hf_reference(model, p, 12, [], s) for p in prompts]


def test_plain_sampling_baseline_is_seeded_and_leaves_the_global_generator_alone():
    model = MODELS["llama"]
    s = SamplingConfig(temperature=1.0, seed=4)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = hf_generate(model, [[4, 5]], 10, [], s)
    assert torch.equal(torch.rand(1), before)
    assert a == hf_generate(model, [[4, 5]], 10, [], s)


def test_keyed_noise_is_bit_for_bit_the_torch_formula_it_replaced():
    """keyed_gumbel takes its logs in numpy (single-threaded); the noise, and so every seed's text, must stay what
    -log(-log(u)) in torch gave for the same generator draws."""
    from medusa_runtime.draws import _position_seed

    for position in range(20):
        generator = torch.Generator().manual_seed(_position_seed(5, 77, position))
        uniform = torch.rand(4096, generator=generator, dtype=torch.float64)
        assert torch.equal(keyed_gumbel(5, 77, position, 4096), (-torch.log(-torch.log(uniform))).float())
