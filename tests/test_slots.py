"""Fixed slots (issue 40): a request is prefilled into a free slot without touching any other row, a finished one
frees its slot for the next, and a queue served that way decodes each prompt exactly as alone."""

import pytest
import torch

from cases import HEADS, MODELS
from medusa_runtime import decoding
from conftest import hf_greedy
from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.spec import TreeSpec

TREE = TreeSpec([(0,), (1,), (0, 0)])


def buffers(state) -> list[torch.Tensor]:
    """Every storage tensor of the batch: the KV cache's and the prefix-attention cache's."""
    return [t for cache in state.caches() for t in cache.storage()]


def row_contents(state, row: int) -> list[torch.Tensor]:
    """Row ``row``'s used positions in every storage tensor (copies)."""
    return [t[row, :, : cache.lengths[row]].clone() for cache in state.caches() for t in cache.storage()]


@pytest.mark.parametrize("arch", ["llama", "mistral-sequential-prefix"])
def test_admission_writes_only_its_slot_and_reallocates_nothing(arch):
    decoder = MedusaDecoder(MODELS[arch], HEADS[arch], TREE, eos_token_ids=[])
    state = decoder.new_state(3, 48)
    decoder.admit(state, 0, [[4, 5, 6], [7, 8], [9, 10, 11, 12]], [0, 1, 2])
    decoder.step(state)
    pointers = [t.data_ptr() for t in buffers(state)]
    others = [t[[0, 2]].clone() for t in buffers(state)]  # rows 0 and 2, scratch positions included
    lengths = [list(cache.lengths) for cache in state.caches()]
    state.retire(1)
    assert state.free_slots() == [1]
    decoder.admit(state, 1, [[13, 14, 15, 16, 17]], [3])
    assert [t.data_ptr() for t in buffers(state)] == pointers  # no buffer was reallocated or concatenated
    assert all(torch.equal(t[[0, 2]], before) for t, before in zip(buffers(state), others))  # nor another row touched
    assert state.rows == [0, 3, 2] and state.cache.lengths == [lengths[0][0], 5, lengths[0][2]] and not state.free
    if state.prefix is not None:
        assert state.prefix.lengths == [lengths[1][0], 1, lengths[1][2]]
    with pytest.raises(ValueError, match="hold a live row"):
        state.slot_caches(0, 1)


def test_a_retired_row_moves_only_when_no_request_waits_for_its_slot():
    decoder = MedusaDecoder(MODELS["llama-prefix"], HEADS["llama-prefix"], TREE, eos_token_ids=[])
    state = decoder.new_state(3, 48)
    decoder.admit(state, 0, [[4, 5, 6], [7, 8], [9, 10, 11, 12]], [0, 1, 2])
    decoder.step(state)
    last = row_contents(state, 2)
    root, hidden = state.root[2].item(), state.hidden[2].clone()
    state.retire(0)
    assert state.compact() == 1  # the last row took slot 0
    assert state.rows == [2, 1] and state.root.tolist()[0] == root and torch.equal(state.hidden[0], hidden)
    assert all(torch.equal(a, b) for a, b in zip(row_contents(state, 0), last))
    state.retire(1)
    assert state.compact() == 0 and state.rows == [2]  # a free last row just goes


def test_served_queue_reuses_freed_slots_and_decodes_each_prompt_as_alone(monkeypatch):
    """More requests than slots, mixed prompt lengths and limits, heads with a prefix-attention cache: every answer is
    the prompt's own greedy decode, admissions go into freed slots (the storage never changes), and the run's
    timings count what happened."""
    model, heads = MODELS["mistral-sequential-prefix"], HEADS["mistral-sequential-prefix"]
    decoder = MedusaDecoder(model, heads, TREE, eos_token_ids=[])
    prompts = [[4, 5], list(range(4, 40)), [9], [10, 11, 12, 13], list(range(20, 60)), [14, 15], [16] * 7]
    limits = [3, 6, 5, 9, 2, 4, 16]  # the queue drains with the last row above a freed slot: it moves
    admitted, storage = [], set()
    real_admit, real_step = decoder.admit, decoder.step

    def admit(state, start, prompts, requests, timings=None):
        admitted.append((start, list(requests), state.batch_size))
        return real_admit(state, start, prompts, requests, timings)

    def step(state, oracles=None):
        storage.add(tuple(t.data_ptr() for t in buffers(state)))
        assert state.batch_size <= 3 and not state.free  # live rows are slots 0..n-1
        return real_step(state, oracles)

    monkeypatch.setattr(decoder, "admit", admit)
    monkeypatch.setattr(decoder, "step", step)
    results = decoder.serve(prompts, limits, slots=3)
    assert [r.tokens for r in results] == [hf_greedy(model, p, n, []) for p, n in zip(prompts, limits)]
    assert len(storage) == 1  # one allocation for the whole queue
    assert admitted[0] == (0, [0, 1, 2], 0) and sorted(i for _, rs, _ in admitted for i in rs) == list(range(7))
    assert all(start < 3 for start, _, _ in admitted[1:])  # every later request took a slot a finished one freed
    assert any(start < live for start, _, live in admitted[1:])  # one below a live row: freed, refilled, nothing moved
    timings = results.timings
    assert timings.admissions == len(admitted) and timings.prefill_s > 0 and timings.admission_s > 0
    assert timings.retire_s > 0 and timings.moves >= 1


def test_admissions_neither_time_kernels_nor_prepare_packs(monkeypatch):
    """The kernels' packs are made once per batch (``new_state``), not per admitted request."""
    calls = []
    monkeypatch.setattr(decoding, "prepare_kernels", lambda model, rows: calls.append(list(rows)))
    monkeypatch.setattr("medusa_runtime.layout.measure_kernel_table", lambda *a, **k: pytest.fail("kernels timed"))
    decoder = MedusaDecoder(MODELS["llama-packed"], HEADS["llama"], TREE, eos_token_ids=[])
    results = decoder.serve([[4, 5], [6, 7, 8], [9], [10, 11], [12]], [3, 6, 2, 4, 2], slots=2)
    assert results.timings.admissions >= 4 and len(calls) == 1
