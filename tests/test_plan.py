"""The admission's throughput (static and continuous batches) on hand-computed cases, and the plan's choices."""

import pytest

from treeopt.admission import PromptReplay, tokens_per_s
from treeopt.design import TreeRequest
from treeopt.plan import plan_batches
from treeopt.stats import CalibrationStats
from treeopt.tuning import BatchLatency, LatencyProfile


def replays(*rows) -> list[PromptReplay]:
    """(tokens, steps, prompt tokens) rows as replays."""
    return [PromptReplay(*row) for row in rows]


def static_tokens_per_s(rows, batch, nodes, latency, **kw) -> float:
    return tokens_per_s(replays(*rows), batch, nodes, latency, "static", **kw)


def continuous_tokens_per_s(rows, batch, nodes, latency, queue=None, **kw) -> float:
    return tokens_per_s(replays(*rows), batch, nodes, latency, "continuous", queue, **kw)


def profile(batch: int, plain: float, verify: dict[int, float], prefill=()) -> LatencyProfile:
    sizes = sorted(verify)
    return LatencyProfile("cpu", "float32", sizes, [verify[n] for n in sizes], plain, {}, batch_size=batch, prefill=list(prefill))


def test_step_and_prefill_times_interpolate_between_profiled_batch_sizes():
    lat = BatchLatency({1: profile(1, 10.0, {2: 12.0, 4: 14.0}, [(10, 5.0), (40, 20.0)]),
                        4: profile(4, 16.0, {2: 24.0, 4: 30.0}, [(10, 14.0), (40, 50.0)])})
    assert lat.step_ms(1, 1) == 10.0 and lat.step_ms(4, 1) == 16.0
    assert lat.step_ms(2, 1) == pytest.approx(12.0) and lat.step_ms(3, 4) == pytest.approx(14.0 + 16.0 * 2 / 3)
    assert lat.step_ms(8, 2) == pytest.approx(24.0 + (24.0 - 12.0) / 3 * 4)  # beyond: the last two sizes' slope
    assert lat.prefill_ms(1, 25) == pytest.approx(12.5) and lat.prefill_ms(4, 40) == pytest.approx(50.0)
    assert lat.prefill_ms(2, 40) == pytest.approx(20.0 + 30.0 / 3)


def test_static_batches_pay_for_rows_that_finish_early():
    lat = BatchLatency({1: profile(1, 10.0, {2: 10.0}), 2: profile(2, 20.0, {2: 20.0})})
    # two prompts: 10 tokens in 5 steps and 4 tokens in 2 steps; together 2 steps of 2 rows, then 3 of 1 row
    rate = static_tokens_per_s([(10, 5, None), (4, 2, None)], batch=2, nodes=2, latency=lat)
    assert rate == pytest.approx(14 / ((2 * 20 + 3 * 10) / 1000))
    # an endless queue: every step runs 2 rows, 7 steps of rows in all (the prefill counted as a step): faster
    assert continuous_tokens_per_s([(10, 5, None), (4, 2, None)], 2, 2, lat) == pytest.approx(14 / (7 / 2 * 20 / 1000))
    # one prompt per batch of 2: the batch is filled up with the same prompt again (as bench does)
    assert static_tokens_per_s([(10, 5, None)], batch=2, nodes=2, latency=lat) == pytest.approx(20 / (5 * 20 / 1000))


def test_static_batches_with_prompt_lengths_pay_a_prefill_padded_to_the_longest():
    prefill = [(4, 8.0), (8, 16.0)]  # 2 ms per padded prompt token
    lat = BatchLatency({1: profile(1, 10.0, {2: 10.0}, prefill), 2: profile(2, 20.0, {2: 20.0}, prefill)})
    rate = static_tokens_per_s([(10, 5, 8), (4, 2, 4)], batch=2, nodes=2, latency=lat)
    # the prefill (padded to 8 tokens: 16 ms) replaces the first step: then 1 step of 2 rows, 3 of 1 row
    assert rate == pytest.approx(14 / ((16 + 1 * 20 + 3 * 10) / 1000))
    # a prompt without a length: the prefill counts as a step again
    assert static_tokens_per_s([(10, 5, 8), (4, 2, None)], 2, 2, lat) == pytest.approx(14 / ((2 * 20 + 3 * 10) / 1000))


def test_continuous_batches_pay_each_request_s_prefill_and_a_burst_drains():
    prefill = [(4, 8.0), (8, 16.0)]  # 2 ms per padded prompt token, at 1 and 2 rows alike
    lat = BatchLatency({1: profile(1, 10.0, {2: 10.0}, prefill), 2: profile(2, 20.0, {2: 20.0}, prefill)})
    a = (10, 5, 8)  # 10 tokens: the prefill's first token, then 4 steps
    # endless queue: per request 4 steps of a full batch of 2 (4 / 2 x 20 ms) and its own prefill (16 ms)
    assert continuous_tokens_per_s([a], 2, 2, lat) == pytest.approx(10 / ((4 / 2 * 20 + 16) / 1000))
    # a burst of 3 through 2 slots: both slots prefilled together (16), 4 steps of 2 rows, then the third alone
    # (prefill 16, 4 steps of 1 row)
    assert continuous_tokens_per_s([a], 2, 2, lat, queue=3) == pytest.approx(30 / ((16 + 4 * 20 + 16 + 4 * 10) / 1000))
    # the end of a burst: once the short row ends, the long one runs its last steps alone
    b = (3, 2, 4)  # the prefill's token, one step
    rate = continuous_tokens_per_s([a, b], 2, 2, lat, queue=2, groupings=1)
    assert rate == pytest.approx(13 / ((16 + 1 * 20 + 3 * 10) / 1000))
    with pytest.raises(ValueError, match="no prompt generated tokens"):
        continuous_tokens_per_s([(0, 0, 4)], 2, 2, lat)


def test_static_batches_average_over_random_groupings():
    """Four prompts in batches of 2 group three ways, equally likely: (a b)(c d) costs 10 + 2 steps of 2 rows (144 ms),
    (a c)(b d) and (a d)(b c) each 2 x (2 steps of 2 rows + 8 of 1 row) (208 ms). One grouping is one of those; many
    groupings converge on tokens over the mean time, 24 / (560 / 3) ms."""
    lat = BatchLatency({1: profile(1, 10.0, {2: 10.0}), 2: profile(2, 12.0, {2: 12.0})})
    rows = [(10, 10, None), (10, 10, None), (2, 2, None), (2, 2, None)]
    assert static_tokens_per_s(rows, 2, 2, lat, groupings=1, seed=0) in (pytest.approx(24 / 0.144), pytest.approx(24 / 0.208))
    assert {round(static_tokens_per_s(rows, 2, 2, lat, groupings=1, seed=s), 6) for s in range(40)} == {
        round(24 / 0.144, 6), round(24 / 0.208, 6)}
    assert static_tokens_per_s(rows, 2, 2, lat, groupings=3000) == pytest.approx(24 / (0.560 / 3), rel=0.01)


def test_a_batch_is_filled_up_with_the_first_prompts_again():
    lat = BatchLatency({1: profile(1, 10.0, {2: 10.0}), 2: profile(2, 20.0, {2: 20.0})})
    # three prompts at batch size 2: batches (a, b) and (c, a), whatever the shuffle puts first
    a, b, c = (6, 3, None), (6, 3, None), (4, 4, None)
    # (a, b): 3 steps of 2 rows; (c, a) or (c, b): 3 steps of 2 rows, then 1 of 1 row; tokens 12 + 10
    assert static_tokens_per_s([a, b, c], 2, 2, lat, groupings=1) == pytest.approx(22 / ((3 * 20 + 3 * 20 + 1 * 10) / 1000))


def test_plan_batches_by_hand():
    """One head, always right: the 2-node tree makes 9 tokens in 5 steps (1.8 tokens/step), plain decoding in 9.
    Continuous batches at B=1: 1.8 * 1000 / 12 ms = 150 tok/s against 1000 / 10 ms = 100: Medusa, 1.5x.
    At B=4: 4 * 1.8 * 1000 / 40 ms = 180 against 4 * 1000 / 20 ms = 200: plain decoding, so Medusa is off from 4 on.
    Static batches: at B=1 each prompt alone (9 tokens in 5 steps of 12 ms against 9 of 10 ms), at B=4 both prompts
    twice (36 tokens in 5 steps of 40 ms against 9 of 20 ms): the same rates, the same verdict."""
    stats = CalibrationStats(1, 1, [[[0]] * 9, [[0]] * 9], [9, 9])
    latencies = {1: profile(1, 10.0, {2: 12.0}), 4: profile(4, 20.0, {2: 40.0})}
    for batching, rates in (("continuous", {1: (150.0, 100.0), 4: (180.0, 200.0)}),
                            ("static", {1: (18 / 0.12, 18 / 0.18), 4: (36 / 0.2, 36 / 0.18)})):
        plan = plan_batches(stats, latencies, TreeRequest(None, folds=0), batching)
        assert [(r.batch_size, r.nodes) for r in plan.rows] == [(1, 2), (4, 1)]
        assert plan.rows[0].tokens_per_step == pytest.approx(1.8)
        assert plan.rows[0].tokens_per_s == pytest.approx(rates[1][0]) and plan.rows[0].plain_tokens_per_s == pytest.approx(rates[1][1])
        assert plan.rows[1].tokens_per_s == pytest.approx(rates[4][1])  # plain decoding is the plan at B=4
        assert plan.rows[0].speedup == pytest.approx(rates[1][0] / rates[1][1], abs=1e-4)
        assert plan.switch_off_batch_size == 4


def test_the_plan_chooses_by_the_low_quantile_and_predicts_by_medians():
    """A profile read by 10th percentiles (what ``build`` chooses by) with medians 25% slower (time stolen by other
    work): the same tree is planned, and the rows' tokens/s are the medians' figures."""
    stats = CalibrationStats(1, 1, [[[0]] * 9, [[0]] * 9], [9, 9])
    low = {1: profile(1, 10.0, {2: 12.0}), 4: profile(4, 20.0, {2: 40.0})}
    for b, p in low.items():
        p.medians = profile(b, p.plain_step_ms * 1.25, {2: p.step_ms[0] * 1.25})
    plan = plan_batches(stats, low, TreeRequest(None, folds=0), "continuous")
    assert [(r.batch_size, r.nodes) for r in plan.rows] == [(1, 2), (4, 1)]
    assert plan.rows[0].tokens_per_s == pytest.approx(150.0 / 1.25) and plan.rows[0].step_ms == pytest.approx(15.0)
    assert plan.rows[1].tokens_per_s == pytest.approx(200.0 / 1.25)


def test_batch_size_1_pays_its_prefills_as_every_batch_size_does():
    """The same hand case with 8-token prompts and a profiled prefill (16 ms at 8 tokens): at batch size 1 each prompt
    costs its prefill and 4 verify steps of 12 ms, 18 tokens in 128 ms, and plain decoding its prefill and 8 steps of
    10 ms, 18 in 192 ms, whichever batching (one admission rule for every batch size, no special case for 1)."""
    stats = CalibrationStats(1, 1, [[[0]] * 9, [[0]] * 9], [9, 9], prompt_tokens=[8, 8])
    prefill = [(4, 8.0), (8, 16.0)]
    latencies = {1: profile(1, 10.0, {2: 12.0}, prefill), 4: profile(4, 20.0, {2: 40.0}, prefill)}
    for batching in ("static", "continuous"):
        row = plan_batches(stats, latencies, TreeRequest(None, folds=0), batching).rows[0]
        assert (row.batch_size, row.nodes) == (1, 2)
        assert row.tokens_per_s == pytest.approx(18 / 0.128) and row.plain_tokens_per_s == pytest.approx(18 / 0.192)
