"""harness.py: the one measuring loop (rotation, static batches, a queue's static arm, references, the identity check)."""

import pytest
import torch

from cases import HEADS, MODELS
from conftest import hf_greedy, loaded_tiny
from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.harness import (HFArm, Queue, References, Row, RuntimeArm, StaticBatches, arm_totals, batches_of,
                                    check, identical_fraction, measure)
from medusa_runtime.sampling import SamplingConfig
from medusa_runtime.spec import TreeSpec

CPU = torch.device("cpu")


class Echo:
    """An arm that returns each prompt reversed, and records the order it was called in."""

    bookkeeping_s = None

    def __init__(self, name: str, calls: list, checked: bool = True):
        self.name, self.calls, self.checked = name, calls, checked

    def decode(self, queue, indices, clock, limit=None):
        self.calls.append((self.name, tuple(indices)))
        return [Row(i, queue.prompts[i][::-1][: queue.limits[i]], 1, 0.0, 0.0) for i in indices]


def test_static_batches_have_every_row_the_last_filled_up_with_the_first_prompts():
    assert batches_of(5, 2) == [[0, 1], [2, 3], [4, 0]]
    assert batches_of(4, 2) == [[0, 1], [2, 3]]
    assert batches_of(2, 3) == [[0, 1, 0]]
    with pytest.raises(ValueError, match="batch size >= 1"):
        batches_of(3, 0)


def test_who_goes_first_rotates_over_units_and_rounds():
    calls = []
    arms = [Echo("a", calls), Echo("b", calls), Echo("c", calls)]
    queue = Queue.of([[1], [2], [3], [4]], 4)
    runs = measure(arms, queue, [[0, 1], [2, 3]], CPU, rounds=2, progress=False)
    firsts = [calls[k][0] for k in range(0, len(calls), 3)]
    assert firsts == ["a", "b", "c", "a"]  # unit 0, unit 1, then round 2's units 0 and 1
    assert [(r.arm, r.unit, r.round) for r in runs[:3]] == [("a", 0, 0), ("b", 0, 0), ("c", 0, 0)]
    with pytest.raises(ValueError, match="must differ"):
        measure([Echo("a", []), Echo("a", [])], queue, [[0]], CPU, progress=False)


def test_a_queue_s_static_arm_keeps_each_request_s_first_decode_and_offsets_its_times():
    calls = []
    clock_values = iter([0.0, 0.0, 5.0, 5.0, 9.0])

    class Timed(Echo):
        def decode(self, queue, indices, clock, limit=None):
            rows = super().decode(queue, indices, clock, limit)
            for row in rows:
                row.first_s, row.finished_s = 1.0, 2.0
            return rows

    arm = StaticBatches(Timed("static", calls), batch_size=2)
    queue = Queue.of([[1, 2], [3, 4], [5, 6]], 2)
    rows = arm.decode(queue, [0, 1, 2], lambda: next(clock_values))
    assert calls == [("static", (0, 1)), ("static", (2, 0))]  # the last batch refilled with request 0
    assert [r.prompt for r in rows] == [0, 1, 2]
    assert [r.finished_s for r in rows] == [2.0, 2.0, 7.0]  # request 2's batch started 5 s in; request 0 kept its first


def test_check_marks_each_row_and_a_wrong_reference_is_a_divergence_at_its_position():
    model = MODELS["llama"]
    queue = Queue.of([[4, 5, 6], [7, 8]], 6)
    greedy = [hf_greedy(model, p, 6, []) for p in queue.prompts]
    decoder = MedusaDecoder(model, HEADS["llama"], TreeSpec([(0,), (1,), (0, 0)]), [])
    arms = [RuntimeArm("medusa", decoder), HFArm("hf", model, [], SamplingConfig())]
    runs = measure(arms, queue, [[0, 1]], CPU, progress=False)
    right = References(model, [], queue, SamplingConfig())
    assert check(runs, arms, right) == [] and identical_fraction(runs, "medusa") == 1.0
    assert right.tokens == dict(enumerate(greedy))  # computed on first use
    wrong = References(model, [], queue, SamplingConfig(), [greedy[0], greedy[1][:3] + [greedy[1][3] + 1] + greedy[1][4:]])
    found = check(runs, arms, wrong)
    assert {(d.arm, d.prompt, d.position) for d in found} == {("medusa", 1, 3), ("hf", 1, 3)}
    assert all(d.top2_margin is not None for d in found) and identical_fraction(runs, "medusa") == 0.5
    totals = arm_totals(runs, "medusa")
    assert totals.tokens == 12 and totals.steps is not None and arm_totals(runs, "hf").steps is None


def test_hf_sampling_is_not_checked_and_references_can_come_from_a_run():
    model = MODELS["llama"]
    sampled = HFArm("hf", model, [], SamplingConfig(temperature=1.0))
    assert not sampled.checked  # do_sample draws its own text
    queue = Queue.of([[4, 5, 6]], 5)
    greedy = HFArm("baseline", model, [], SamplingConfig())
    runs = measure([greedy], queue, [[0]], CPU, progress=False)
    refs = References(model, [], queue, SamplingConfig())
    refs.adopt(runs, "baseline")
    assert refs.tokens[0] == hf_greedy(model, [4, 5, 6], 5, [])


def test_a_continuous_runtime_arm_serves_more_requests_than_slots_exactly():
    model = MODELS["llama"]
    loaded = loaded_tiny(model, eos=())
    queue = Queue.of([[4, 5, 6], [7, 8], [9, 10, 11, 12], [13]], [3, 8, 5, 7])
    arm = RuntimeArm("medusa", MedusaDecoder(model, HEADS["llama"], TreeSpec([(0,), (1,), (0, 0)]), []), slots=2)
    runs = measure([arm], queue, [[0, 1, 2, 3]], loaded.device, progress=False)
    assert [len(r.tokens) for r in runs[0].rows] == [3, 8, 5, 7]
    assert 0 < runs[0].bookkeeping_s < runs[0].seconds  # admitting and retiring, reported by serve
    assert check(runs, [arm], References(model, [], queue, SamplingConfig())) == []
