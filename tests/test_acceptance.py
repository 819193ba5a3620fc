"""Acceptance rules. Sample-and-match draws from the target's exact distribution (a goodness-of-fit test against
probabilities enumerated from the model, with unkeyed noise, that an injected bias fails); typical acceptance on a
hand-computed case."""

import itertools
import math

import pytest
import torch

from conftest import tiny_heads, tiny_model
from medusa_runtime.acceptance import MatchRule, TypicalRule, make_rule
from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.draws import keyed_gumbel, warp
from medusa_runtime.sampling import SamplingConfig
from medusa_runtime.spec import TreeSpec
from medusa_runtime.tree import build_buffers

V = 6  # small enough to enumerate every continuation
LENGTH = 3  # tokens per sample: the prefill's, then up to two accepted by one tree step plus the bonus
PROMPT = [2, 3, 4]
TREE = TreeSpec([(0,), (1,), (2,), (3,), (0, 0), (0, 1), (1, 0), (2, 0)])
SAMPLES = 6000
MODEL = tiny_model("llama", seed=3, vocab=V)
HEADS = tiny_heads(MODEL, num_heads=2, std=0.5)


@torch.inference_mode()
def exact_probabilities(sampling: SamplingConfig) -> dict[tuple[int, ...], float]:
    """P(continuation) of every LENGTH-token continuation of PROMPT under plain sampling with these warpers."""
    seqs = list(itertools.product(range(V), repeat=LENGTH))
    ids = torch.tensor([PROMPT + list(s) for s in seqs])  # [S, P + L]
    logits = MODEL(input_ids=ids).logits[:, len(PROMPT) - 1 : len(PROMPT) - 1 + LENGTH]  # [S, L, V]
    logp = torch.log_softmax(warp(logits, sampling), dim=-1).gather(2, torch.tensor(seqs)[..., None])[..., 0]
    return dict(zip(seqs, logp.sum(-1).exp().tolist()))


def chi_square_p_value(counts: dict, probabilities: dict, n: int) -> float:
    """Pearson's test; continuations expected fewer than 5 times are pooled into one bin."""
    big = [s for s, p in probabilities.items() if p * n >= 5]
    observed = [counts.get(s, 0) for s in big] + [n - sum(counts.get(s, 0) for s in big)]
    expected = [probabilities[s] * n for s in big] + [n * (1 - sum(probabilities[s] for s in big))]
    if expected[-1] < 5:  # nothing worth a bin left over
        observed, expected = observed[:-1], expected[:-1]
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, expected))
    dof = torch.tensor((len(observed) - 1) / 2, dtype=torch.float64)
    return float(torch.special.gammaincc(dof, torch.tensor(stat / 2, dtype=torch.float64)))


def sample(sampling: SamplingConfig, rule=None) -> tuple[dict, float]:
    """SAMPLES continuations drawn by the runtime (one batch of identical rows, unkeyed noise): counts, tokens/step."""
    decoder = MedusaDecoder(MODEL, HEADS, TREE, [], sampling)
    if rule is not None:
        decoder.rule = rule(decoder.buffers, sampling, V, decoder.device)
    results = decoder.generate_batch([PROMPT] * SAMPLES, LENGTH)
    counts: dict[tuple[int, ...], int] = {}
    for r in results:
        counts[tuple(r.tokens)] = counts.get(tuple(r.tokens), 0) + 1
    return counts, sum(len(r.tokens) for r in results) / sum(r.steps for r in results)


class RankZeroBias(MatchRule):
    """An injected fault: when the root's draw matches none of its children, every fourth time the rank-0 child is
    accepted anyway (a rule that favours the heads' guesses)."""

    misses = 0

    def match(self, tokens, node, target):
        child = super().match(tokens, node, target)
        if child is None and node == 0:
            self.misses += 1
            if self.misses % 4 == 0:
                return self.buffers.children[0][0]
        return child


@pytest.mark.parametrize("sampling", [SamplingConfig(temperature=1.0, seed=11, keyed=False),
                                      SamplingConfig(temperature=0.6, top_k=4, top_p=0.9, seed=12, keyed=False)],
                         ids=["t1", "t0.6-topk4-topp0.9"])
def test_sample_and_match_draws_from_the_exact_distribution(sampling):
    probabilities = exact_probabilities(sampling)
    assert abs(sum(probabilities.values()) - 1) < 1e-5
    counts, tokens_per_step = sample(sampling)
    assert tokens_per_step > 1.2  # the tree did accept drafts: the rule was exercised, not only the bonus token
    assert chi_square_p_value(counts, probabilities, SAMPLES) > 1e-3


def test_the_goodness_of_fit_test_catches_a_biased_rule_and_typical_acceptance():
    sampling = SamplingConfig(temperature=1.0, seed=11, keyed=False)
    probabilities = exact_probabilities(sampling)
    biased, _ = sample(sampling, RankZeroBias)
    assert chi_square_p_value(biased, probabilities, SAMPLES) < 1e-6
    typical, _ = sample(SamplingConfig(temperature=1.0, seed=11, keyed=False, acceptance="typical"))
    assert chi_square_p_value(typical, probabilities, SAMPLES) < 1e-6  # lossy, as documented


def test_keyed_draws_repeat_and_unkeyed_rows_differ():
    keyed = SamplingConfig(temperature=1.0, seed=5)
    rows = MedusaDecoder(MODEL, HEADS, TREE, [], keyed).generate_batch([PROMPT] * 8, 6)
    assert len({tuple(r.tokens) for r in rows}) == 1  # one prompt, one key: one text
    fresh = MedusaDecoder(MODEL, HEADS, TREE, [], SamplingConfig(temperature=1.0, seed=5, keyed=False))
    first = [r.tokens for r in fresh.generate_batch([PROMPT] * 8, 6)]
    assert len({tuple(t) for t in first}) > 1  # independent rows
    assert [r.tokens for r in fresh.generate_batch([PROMPT] * 8, 6)] == first  # a seed fixes them


# ---------------------------------------------------------------- typical acceptance, computed by hand
def logits_of(*distributions):
    return torch.log(torch.tensor(distributions, dtype=torch.float32))[None]  # [1, N, V]


def test_typical_acceptance_hand_computed():
    """Tree root -> a (rank 0), b (rank 1); a -> c. Root distribution [.5, .3, .15, .05]: entropy 1.142, threshold
    min(0.09, 0.3 e^-1.142 = 0.096) = 0.09. a is token 2 (p .15), b token 1 (p .30): both pass. c is token 3 under a's
    distribution [.5, .4, .05, .05] (p .05 < 0.09): rejected. Two paths of depth 1 pass: the more likely one, b."""
    buffers = build_buffers(TREE_ABC := TreeSpec([(0,), (1,), (0, 0)]))
    sampling = SamplingConfig(temperature=1.0, acceptance="typical", seed=3)
    rule = make_rule(buffers, sampling, 4, torch.device("cpu"))
    assert isinstance(rule, TypicalRule) and TREE_ABC.nodes == 4
    tokens = torch.tensor([[0, 2, 1, 3]])  # root, a, b, c (nodes in depth order)
    logits = logits_of([.5, .3, .15, .05], [.5, .4, .05, .05], [.25, .25, .25, .25], [.25, .25, .25, .25])
    nodes, bonus = rule.accept(tokens, logits, [77], [10])
    assert nodes == [2]
    # the bonus is the target's own keyed draw at b, which sits at position 11 and predicts position 12
    expected = int((logits[0, 2] + keyed_gumbel(3, 77, 12, 4)).argmax())
    assert bonus == [expected]
    # greedy would have accepted nothing: the root's argmax (token 0) is neither a nor b
    greedy = make_rule(buffers, SamplingConfig(), 4, torch.device("cpu"))
    assert greedy.accept(tokens, logits, [77], [10]) == ([0], [0])


def test_typical_threshold_is_the_entropy_term_when_the_distribution_is_flat():
    """Root distribution over 16 tokens: token 5 has p 0.08, the 15 others 0.92/15 each. Entropy 2.75, so the threshold
    is 0.3 e^-2.75 = 0.019, not 0.09: the node holding token 5 passes (it would fail against epsilon alone)."""
    p = [0.92 / 15] * 16
    p[5] = 0.08
    entropy = -sum(q * math.log(q) for q in p)
    assert 0.3 * math.exp(-entropy) < 0.08 < 0.09
    buffers = build_buffers(TreeSpec([(0,)]))
    rule = make_rule(buffers, SamplingConfig(temperature=1.0, acceptance="typical"), 16, torch.device("cpu"))
    logits = torch.log(torch.tensor([p, [1 / 16] * 16]))[None]
    assert rule.accept(torch.tensor([[0, 5]]), logits, [1], [3])[0] == [1]
    assert rule.accept(torch.tensor([[0, 6]]), logits, [1], [3])[0] == [1]  # 0.061 > 0.019 too
    rule_eps = make_rule(buffers, SamplingConfig(temperature=1.0, acceptance="typical", posterior_alpha=10.0), 16, torch.device("cpu"))
    assert rule_eps.accept(torch.tensor([[0, 6]]), logits, [1], [3])[0] == [0]  # against epsilon 0.09 alone: rejected
