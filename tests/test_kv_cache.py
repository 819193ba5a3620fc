"""The batched KV cache's own operations: per-row writes, commit (accepted-path move), fixed slots (prefill in place,
release, one-row move)."""

import pytest
import torch

from medusa_runtime.kv_cache import TreeKVCache


def new_cache(num_layers: int, max_len: int, slots: int) -> TreeKVCache:
    """A cache of one-dim keys (kv_heads 1, head_dim 1), every slot live at length 0."""
    return TreeKVCache(num_layers, max_len, slots, kv_heads=1, head_dim=1)


def fill(cache: TreeKVCache, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One 'forward' writing ``values`` [B, T] (as one-dim keys, value = key + 100) through layer 0."""
    k = values[:, None, :, None].float()  # [B, kv_heads=1, T, head_dim=1]
    return cache.layers[0].update(k, k + 100)


def row(cache: TreeKVCache, b: int) -> list[int]:
    return cache.layers[0].keys[b, 0, : cache.lengths[b], 0].int().tolist()


def test_equal_lengths_write_a_slice_and_span_covers_the_new_tokens():
    cache = new_cache(1, 16, 2)
    assert cache.prepare(3) == 3 and cache.plan.start == 0
    keys, values = fill(cache, torch.tensor([[1, 2, 3], [4, 5, 6]]))
    assert keys.shape == (2, 1, 3, 1) and (values - keys).eq(100).all()
    cache.commit([[0, 1, 2], [0, 1]])  # row 1 keeps two tokens: its third slot becomes scratch
    assert cache.lengths == [3, 2] and row(cache, 0) == [1, 2, 3] and row(cache, 1) == [4, 5]


def test_rows_of_different_lengths_write_at_their_own_positions():
    cache = new_cache(1, 16, 2)
    cache.prepare(3)
    fill(cache, torch.tensor([[1, 2, 3], [4, 5, 6]]))
    cache.commit([[0, 1, 2], [0]])
    assert cache.prepare(2) == 5 and cache.plan.start is None and cache.get_seq_length() == 3
    keys, _ = fill(cache, torch.tensor([[7, 8], [9, 10]]))
    assert keys.shape[2] == 5  # the span is the longest row's length + the new tokens
    assert keys[0, 0, :5, 0].tolist() == [1, 2, 3, 7, 8] and keys[1, 0, :3, 0].tolist() == [4, 9, 10]


def test_commit_moves_each_rows_accepted_tree_slots_after_its_prefix():
    cache = new_cache(2, 16, 3)
    cache.prepare(2)
    for layer in cache.layers:
        layer.update(torch.zeros(3, 1, 2, 1), torch.full((3, 1, 2, 1), 100.0))
    cache.commit([[0, 1], [0], [0, 1]])
    cache.prepare(5)  # a 5-node tree at lengths [2, 1, 2]
    tree = torch.tensor([[10, 11, 12, 13, 14], [20, 21, 22, 23, 24], [30, 31, 32, 33, 34]])
    for layer in cache.layers:
        layer.update(tree[:, None, :, None].float(), tree[:, None, :, None].float() + 100)
    cache.commit([[0, 2, 4], [0], [0, 1, 3]])  # root + nodes 2, 4 / root only / root + nodes 1, 3
    assert cache.lengths == [5, 2, 5]
    for layer in cache.layers:
        assert layer.keys[0, 0, 2:5, 0].tolist() == [10, 12, 14]
        assert layer.keys[1, 0, 1:2, 0].tolist() == [20]
        assert layer.keys[2, 0, 2:5, 0].tolist() == [30, 31, 33]
        assert (layer.values - layer.keys)[:, :, :5].eq(100).all()


def test_overflow_and_mismatched_commit_are_errors():
    cache = new_cache(1, 4, 1)
    cache.prepare(3)
    fill(cache, torch.tensor([[1, 2, 3]]))
    cache.commit([[0, 1, 2]])
    with pytest.raises(RuntimeError, match="KV cache overflow: 5 > 4"):
        cache.prepare(2)
    with pytest.raises(ValueError, match="2 accepted paths for a batch of 1 rows"):
        cache.commit([[0], [0]])


def test_attention_bias_by_hand():
    """Rows of lengths 3 and 1, a 2-node tree (node 1 sees the root): each row sees its own prefix, the tree pattern
    over its own two new slots, and nothing else (another row's longer history, scratch)."""
    cache = new_cache(1, 16, 2)
    cache.prepare(3)
    fill(cache, torch.tensor([[1, 2, 3], [4, 5, 6]]))
    cache.commit([[0, 1, 2], [0]])
    tree = torch.tensor([[0.0, -9.0], [0.0, 0.0]])  # -9: the dtype minimum of this toy mask
    cache.prepare(2)
    bias = cache.attention_bias(tree)
    low = torch.finfo(torch.float32).min
    assert bias.shape == (2, 1, 2, 5)
    assert bias[0, 0].tolist() == [[0, 0, 0, 0, -9], [0, 0, 0, 0, 0]]  # prefix 0..2, tree at slots 3, 4
    assert bias[1, 0].tolist() == [[0, 0, -9, low, low], [0, 0, 0, low, low]]  # prefix 0, tree at slots 1, 2


def test_a_prefill_through_a_slot_view_writes_in_place_and_leaves_other_rows_alone():
    cache = new_cache(2, 16, 3)
    cache.prepare(2)
    for layer in cache.layers:
        layer.update(torch.tensor([[1, 2], [3, 4], [5, 6]])[:, None, :, None].float(), torch.zeros(3, 1, 2, 1))
    cache.commit([[0, 1], [0], [0, 1]])
    storage = [t.data_ptr() for t in cache.storage()]
    before = [t.clone() for t in cache.storage()]
    cache.release(1)
    view = cache.rows_view(1, 2)
    view.prepare(3)
    for layer in view.layers:
        layer.update(torch.tensor([[7, 8, 9]])[:, None, :, None].float(), torch.ones(1, 1, 3, 1))
    view.commit([[0, 1, 2]])
    cache.occupy(1, view.lengths)
    assert cache.lengths == [2, 3, 2] and [row(cache, b) for b in range(3)] == [[1, 2], [7, 8, 9], [5, 6]]
    assert [t.data_ptr() for t in cache.storage()] == storage  # no buffer was reallocated
    for now, then in zip(cache.storage(), before):
        assert torch.equal(now[[0, 2]], then[[0, 2]])  # the other rows' contents, scratch included, are untouched
    with pytest.raises(ValueError, match="outside this cache's 3 slots"):
        cache.rows_view(2, 4)


def test_move_row_copies_one_row_and_truncate_forgets_the_rest():
    cache = new_cache(1, 8, 3)
    cache.prepare(2)
    fill(cache, torch.tensor([[1, 2], [3, 4], [5, 6]]))
    cache.commit([[0, 1], [0], [0]])
    cache.release(0)
    cache.move_row(2, 0)
    cache.truncate(2)
    assert cache.lengths == [1, 1] and row(cache, 0) == [5] and row(cache, 1) == [3]
    assert cache.slots == 3 and cache.layers[0].keys.shape[0] == 3  # the storage keeps its slots
    cache.prepare(1)  # a forward runs over the live rows only
    keys, _ = fill(cache, torch.tensor([[9], [9]]))
    assert keys.shape[0] == 2
    with pytest.raises(ValueError, match="cannot occupy slots 3..3"):
        cache.occupy(3, [1])
