"""A static KV cache for tree decoding of B sequences held in fixed slots: one buffer, per-row lengths and write positions.

Layout: per layer one ``[slots, kv_heads, max_len, head_dim]`` buffer for keys and one for values, allocated once
when the cache is made; nothing reallocates or copies it afterwards. The batch's live rows are slots ``0 .. n-1``
(``n = len(lengths)``); a forward runs over those slots only (views of the buffers, no gather). Row b's accepted
tokens fill positions ``0 .. lengths[b]-1``: every prompt starts at position 0 (no left padding), so a token's cache
slot is its true position and RoPE sees what it sees when that prompt decodes alone. A forward of T tokens per row
(``prepare(T)``) writes row b's tokens at ``lengths[b] .. lengths[b]+T-1`` and gives attention positions
``0 .. max(lengths)+T-1``. Positions past a row's length (another row's longer history, a previous step's rejected
tree nodes, a batched prefill's right padding, a finished request's leftovers) are scratch: the caller's attention
bias hides them, and the row's next writes overwrite them. ``commit`` moves each row's accepted tree slots to follow
its prefix and grows its length. The cache also makes each forward's attention bias from its lengths
(``attention_bias``), so nobody keeps a mask in step by hand.

Slots (``SlotRows``, shared with the prefix-attention cache): a request is prefilled through ``rows_view(start,
stop)``, a cache over those slots' own storage, so its keys and values are written where they stay, and
``occupy`` then records its length; ``release`` frees a finished row (its length 0, its storage left as is);
``move_row`` copies one row's used positions into another slot and ``truncate`` forgets the rows past n. Which slot
a request takes, and when a row moves, is the caller's decision (``batch.DecodeState``): there a freed slot is
refilled by the next waiting request, and only when none waits is the last live row moved into it (one row's
copy), so the live rows stay slots ``0 .. n-1`` and a step never computes a dead row.

Why per-row write positions rather than one shared write position with masked holes: holes would grow by
every token a row accepts less than the best row of a step, so the attention span (and its cost) would grow
with the batch's spread and positions would drift from the ones the row sees alone; per-row positions keep
each row dense. The price is an indexed write per layer instead of a slice when rows' lengths differ (equal
lengths, such as batch size 1 and the prefill, take the slice path).

This module knows nothing of trees, heads or requests; the decoder (``decoding.py``) drives it.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, StaticLayer


class WritePlan:
    """Where the next forward writes, shared by every layer of one cache; ``TreeKVCache.prepare`` fills it. Public:
    the decoder reads ``starts`` (each row's first write position, i.e. the position of its first new token)."""

    def __init__(self) -> None:
        self.rows = 0  # live rows the forward runs over: slots 0 .. rows-1
        self.start: int | None = None  # every row writes at this position (equal lengths), or None
        self.starts: torch.Tensor | None = None  # [rows] each row's first write position (its length before the forward)
        self.positions: torch.Tensor | None = None  # [rows, T] per-row write positions when lengths differ
        self.row_index: torch.Tensor | None = None  # [rows, 1] row indices for the indexed write
        self.past = 0  # max(lengths) before the forward (what Hugging Face asks as the cache's sequence length)
        self.end = 0  # attention span: max(lengths) + T


class SlotRows:
    """Per-slot lengths over storage preallocated for ``slots`` rows; the live rows are slots ``0 .. len(lengths)-1``.
    A subclass keeps ``lengths`` and says which tensors hold its rows (``storage``: each [slots, heads, positions,
    dim]). None of these operations copies a row other than the one named."""

    lengths: list[int]

    def storage(self) -> list[torch.Tensor]:
        raise NotImplementedError

    @property
    def slots(self) -> int:
        return self.storage()[0].shape[0]

    def occupy(self, start: int, lengths: list[int]) -> None:
        """Slots ``start ..`` now hold rows of these lengths (written through ``rows_view``); ``start`` is a live
        row or the first slot past them, so the live rows stay ``0 .. n-1``."""
        stop = start + len(lengths)
        if start > len(self.lengths) or stop > self.slots:
            raise ValueError(f"cannot occupy slots {start}..{stop - 1}: {len(self.lengths)} live rows of {self.slots} slots")
        self.lengths = self.lengths[:start] + list(lengths) + self.lengths[stop:]

    def release(self, row: int) -> None:
        """Row ``row``'s request has finished: its length becomes 0 (its storage is left as it is, scratch)."""
        self.lengths[row] = 0

    def move_row(self, src: int, dst: int) -> None:
        """Copy row ``src``'s used positions into slot ``dst`` (one row's copy); ``dst`` takes its length."""
        n = self.lengths[src]
        for buffer in self.storage():
            buffer[dst, :, :n] = buffer[src, :, :n]
        self.lengths[dst] = n

    def truncate(self, rows: int) -> None:
        """Keep only the live rows ``0 .. rows-1`` (the others were released or moved)."""
        self.lengths = self.lengths[:rows]


class RowStaticLayer(StaticLayer):
    """One layer's K/V buffers ([slots, kv_heads, max_len, head_dim], given, not allocated here); writes where the
    cache's plan says and hands attention the live rows' span in use."""

    def __init__(self, max_cache_len: int, plan: WritePlan, keys: torch.Tensor, values: torch.Tensor):
        super().__init__(max_cache_len=max_cache_len)
        self.plan = plan
        self.keys, self.values = keys, values
        self.device, self.is_initialized = keys.device, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """key_states, value_states: [rows, kv_heads, T, head_dim] -> this layer's [rows, kv_heads, end, head_dim] views."""
        plan = self.plan
        keys, values = self.keys[: plan.rows], self.values[: plan.rows]  # views of the live slots
        if plan.start is not None:
            t = key_states.shape[-2]
            keys[:, :, plan.start : plan.start + t] = key_states
            values[:, :, plan.start : plan.start + t] = value_states
        else:  # indexed write: result dims [rows, T, kv_heads, head_dim]
            keys[plan.row_index, :, plan.positions] = key_states.transpose(1, 2)
            values[plan.row_index, :, plan.positions] = value_states.transpose(1, 2)
        return keys[:, :, : plan.end], values[:, :, : plan.end]

    def get_mask_sizes(self, *args, **kwargs) -> tuple[int, int]:
        return self.plan.end, 0

    def get_seq_length(self) -> int:
        return self.plan.past


class TreeKVCache(SlotRows, Cache):
    """The KV cache of a batch of sequences in fixed slots; see the module docstring for the layout. A new cache has
    every slot live at length 0 (``truncate(0)`` empties it for requests to ``occupy``)."""

    def __init__(self, num_layers: int, max_len: int, slots: int, kv_heads: int, head_dim: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 buffers: list[tuple[torch.Tensor, torch.Tensor]] | None = None):
        """``buffers``: per layer the (keys, values) storage to use instead of allocating it (``rows_view``)."""
        self.plan = WritePlan()
        self.device = torch.device(device)
        if buffers is None:
            shape = (slots, kv_heads, max_len, head_dim)
            buffers = [(torch.zeros(shape, device=self.device, dtype=dtype), torch.zeros(shape, device=self.device, dtype=dtype))
                       for _ in range(num_layers)]
        super().__init__(layers=[RowStaticLayer(max_len, self.plan, k, v) for k, v in buffers])
        self.max_len = max_len
        self.lengths = [0] * slots  # tokens of each live row that are in the cache

    def storage(self) -> list[torch.Tensor]:
        return [t for layer in self.layers for t in (layer.keys, layer.values)]

    @property
    def batch_size(self) -> int:
        """Live rows (what a forward runs over)."""
        return len(self.lengths)

    def rows_view(self, start: int, stop: int) -> "TreeKVCache":
        """A cache over slots ``start .. stop-1`` of this one's storage (views: its writes land here), with those
        slots as its live rows at length 0: a prefill through it writes a request's keys and values in place."""
        if not 0 <= start < stop <= self.slots:
            raise ValueError(f"slots {start}..{stop - 1} are outside this cache's {self.slots} slots")
        return TreeKVCache(len(self.layers), self.max_len, stop - start, 0, 0, self.device,
                           buffers=[(layer.keys[start:stop], layer.values[start:stop]) for layer in self.layers])

    def prepare(self, tokens_per_row: int) -> int:
        """Plan the next forward's writes (``tokens_per_row`` tokens after each live row's length); returns the
        attention span, the key length the forward's attention bias must have."""
        plan, lengths = self.plan, self.lengths
        if not lengths:
            raise RuntimeError("the KV cache has no live rows to run a forward over; prefill a request first")
        plan.rows = len(lengths)
        plan.past = max(lengths)
        plan.end = plan.past + tokens_per_row
        if plan.end > self.max_len:
            raise RuntimeError(f"KV cache overflow: {plan.end} > {self.max_len} preallocated tokens")
        plan.starts = torch.tensor(lengths, device=self.device)
        if min(lengths) == plan.past:
            plan.start, plan.positions = plan.past, None
        else:
            plan.start = None
            plan.positions = plan.starts[:, None] + torch.arange(tokens_per_row, device=self.device)  # [B, T]
            plan.row_index = torch.arange(len(lengths), device=self.device)[:, None]  # [B, 1]
        return plan.end

    def commit(self, accepted_slots: list[list[int]]) -> None:
        """Row b keeps the tokens its last forward wrote at slots ``lengths[b] + accepted_slots[b][j]`` (j = 0, 1,
        ...), moved to ``lengths[b] + j``; its length grows by ``len(accepted_slots[b])``. Slots must be
        increasing, so a move never reads a slot an earlier move of the same row wrote."""
        if len(accepted_slots) != len(self.lengths):
            raise ValueError(f"{len(accepted_slots)} accepted paths for a batch of {len(self.lengths)} rows")
        if any(slots != list(range(len(slots))) for slots in accepted_slots):
            self._move(accepted_slots)
        self.lengths = [n + len(slots) for n, slots in zip(self.lengths, accepted_slots)]

    def _move(self, accepted_slots: list[list[int]]) -> None:
        width = max(len(s) for s in accepted_slots)
        # pad each row to ``width`` with slots beyond its accepted length copied onto themselves (scratch anyway)
        src = [[n + s for s in slots] + [n + j for j in range(len(slots), width)] for n, slots in zip(self.lengths, accepted_slots)]
        dst = [[n + j for j in range(width)] for n in self.lengths]
        device = self.device
        src_t, dst_t = torch.tensor(src, device=device), torch.tensor(dst, device=device)  # [B, width]
        rows = torch.arange(len(self.lengths), device=device)[:, None]  # [B, 1]
        for layer in self.layers:  # the gather copies before the write: overlapping slots are safe
            layer.keys[rows, :, dst_t] = layer.keys[rows, :, src_t]
            layer.values[rows, :, dst_t] = layer.values[rows, :, src_t]

    def attention_bias(self, tree_bias: torch.Tensor) -> torch.Tensor:
        """After ``prepare(N)``: the additive bias of that forward, [B, 1, N, span]: 0 over each row's own prefix (its
        first ``lengths[b]`` slots), ``tree_bias`` [N, N] (the tree's own mask) over its N new slots, and the bias
        dtype's minimum everywhere else (another row's longer history, a previous step's rejected nodes)."""
        plan = self.plan
        n = tree_bias.shape[0]
        rel = torch.arange(plan.end, device=self.device)[None, :] - plan.starts[:, None]  # [B, span]: slot - row's length
        tree = tree_bias[:, rel.clamp(0, n - 1)].transpose(0, 1)  # [B, N, span]: the tree column each slot would be
        visible = torch.where(rel < 0, 0.0, torch.finfo(tree_bias.dtype).min).to(tree_bias.dtype)  # [B, span]
        return torch.where(((rel >= 0) & (rel < n))[:, None, :], tree, visible[:, None, :])[:, None]  # [B, 1, N, span]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.plan.past
