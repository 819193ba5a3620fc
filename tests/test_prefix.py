"""Prefix attention: the runtime's step-by-step extension equals the layer over whole answers; its KV cache."""

import pytest
import torch

from medusa_runtime.prefix import PrefixAttention, PrefixConfig, PrefixKVCache

H = 32


def random_layer(seed: int = 0) -> PrefixAttention:
    torch.manual_seed(seed)
    layer = PrefixAttention(H, PrefixConfig(num_attention_heads=4, intermediate_size=48))
    with torch.no_grad():
        for linear in (layer.out, layer.down):  # not the identity it starts as
            torch.nn.init.normal_(linear.weight, std=0.3)
    return layer.eval()


def test_a_fresh_layer_is_the_identity():
    torch.manual_seed(1)
    layer = PrefixAttention(H, PrefixConfig(4, 48))
    x = torch.randn(2, 7, H)
    assert torch.equal(layer(x), x)


def test_extending_step_by_step_equals_the_layer_over_whole_answers():
    layer = random_layer()
    torch.manual_seed(2)
    x = torch.randn(2, 12, H)  # two answers of 12 rows
    whole = layer(x)  # [2, 12, H]
    cache = layer.new_cache(2, 16)
    # row 0 takes 1, 3, 2, 4, 2 rows per step; row 1 takes 1, 1, 5, 3, 2 (each step padded to the longest)
    steps = [[1, 1], [3, 1], [2, 5], [4, 3], [2, 2]]
    done = [0, 0]
    with torch.inference_mode():
        for counts in steps:
            width = max(counts)
            new = torch.zeros(2, width, H)
            for b, n in enumerate(counts):
                new[b, :n] = x[b, done[b] : done[b] + n]
            z = layer.extend(cache, new, counts)  # [2, H]: at each row's last new row
            done = [d + n for d, n in zip(done, counts)]
            for b in range(2):
                torch.testing.assert_close(z[b], whole[b, done[b] - 1], rtol=1e-5, atol=1e-5)
    assert cache.lengths == [12, 12]


def test_later_rows_do_not_change_earlier_outputs():
    layer = random_layer(3)
    x = torch.randn(1, 9, H)
    y = x.clone()
    y[0, 5:] = torch.randn(4, H)
    assert torch.allclose(layer(x)[0, :5], layer(y)[0, :5], atol=1e-6)  # causal
    assert not torch.allclose(layer(x)[0, 5:], layer(y)[0, 5:])


def test_cache_writes_per_row_moves_a_row_into_a_freed_slot_and_refuses_overflow():
    cache = PrefixKVCache(batch=3, heads=2, head_dim=4, capacity=6, device="cpu", dtype=torch.float32)
    k = torch.arange(3 * 2 * 3 * 4, dtype=torch.float32).view(3, 2, 3, 4)  # [B, A, T, d]
    assert cache.write(k, -k, [1, 3, 2]) == 3
    assert cache.lengths == [1, 3, 2]
    assert torch.equal(cache.k[1, :, :3], k[1]) and torch.equal(cache.v[2, :, :2], -k[2, :, :2])
    assert cache.k[0, :, 1:].abs().sum() == 0  # row 0's padding was not written
    assert cache.write(k[:, :, :2], k[:, :, :2], [2, 1, 2]) == 4
    assert torch.equal(cache.k[0, :, 1:3], k[0, :, :2])  # appended after row 0's own length
    cache.release(0)
    cache.move_row(2, 0)  # the last row fills the freed slot: one row's copy
    cache.truncate(2)
    assert cache.lengths == [4, 4] and cache.k.shape[0] == 3
    assert torch.equal(cache.k[0, :, :2], k[2, :, :2]) and torch.equal(cache.k[1, :, :3], k[1])
    with pytest.raises(ValueError, match="cannot take 3 more"):
        cache.write(k[:2], k[:2], [3, 3])
    with pytest.raises(ValueError, match="1 new-row counts for a cache of 2"):
        cache.write(k[:2, :, :1], k[:2, :, :1], [1])


def test_config_checks_and_checkpoint_shapes():
    with pytest.raises(ValueError, match="num_attention_heads >= 1"):
        PrefixConfig(num_attention_heads=0)
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads 5"):
        PrefixAttention(H, PrefixConfig(5, 48))
    layer = PrefixAttention(H, PrefixConfig(4, 48))
    shapes = PrefixConfig(4, 48).shapes(H)
    assert {f"prefix.{k}": tuple(v.shape) for k, v in layer.state_dict().items()} == shapes
