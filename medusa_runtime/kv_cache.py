"""A static KV cache for tree decoding of B sequences at once: one buffer, per-row lengths and write positions.

Layout: per layer one preallocated ``[B, kv_heads, max_len, head_dim]`` buffer for keys and one for values.
Row b's accepted tokens fill positions ``0 .. lengths[b]-1``: every prompt starts at position 0 (no left
padding), so a token's cache slot is its true position and RoPE sees what it sees when that prompt decodes
alone. A forward of T tokens per row (``prepare(T)``) writes row b's tokens at ``lengths[b] .. lengths[b]+T-1``
and gives attention positions ``0 .. max(lengths)+T-1``. Slots past a row's length (another row's longer
history, a previous step's rejected tree nodes, a batched prefill's right padding) are scratch: the caller's
attention bias hides them, and the row's next writes overwrite them. ``commit`` moves each row's accepted
tree slots to follow its prefix and grows its length; ``keep_rows`` drops finished rows and ``append`` adds the rows of
another cache of the same ``max_len`` (sequences prefilled on their own joining a running batch). The cache also
makes each forward's attention bias from its lengths (``attention_bias``), so nobody keeps a mask in step by hand.

Why per-row write positions rather than one shared write position with masked holes: holes would grow by
every token a row accepts less than the best row of a step, so the attention span (and its cost) would grow
with the batch's spread and positions would drift from the ones the row sees alone; per-row positions keep
each row dense. The price is an indexed write per layer instead of a slice when rows' lengths differ (equal
lengths, such as batch size 1 and the prefill, take the slice path).

This module knows nothing of trees or heads; the decoder (``decoding.py``) drives it.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, StaticLayer


class _WritePlan:
    """Where the next forward writes, shared by every layer of one cache."""

    def __init__(self) -> None:
        self.start: int | None = None  # every row writes at this position (equal lengths), or None
        self.starts: torch.Tensor | None = None  # [B] each row's first write position (its length before the forward)
        self.positions: torch.Tensor | None = None  # [B, T] per-row write positions when lengths differ
        self.rows: torch.Tensor | None = None  # [B, 1] row indices for the indexed write
        self.past = 0  # max(lengths) before the forward (what Hugging Face asks as the cache's sequence length)
        self.end = 0  # attention span: max(lengths) + T


class RowStaticLayer(StaticLayer):
    """One layer's K/V buffers; writes where the cache's plan says and hands attention the span in use."""

    def __init__(self, max_cache_len: int, plan: _WritePlan):
        super().__init__(max_cache_len=max_cache_len)
        self.plan = plan

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """key_states, value_states: [B, kv_heads, T, head_dim] -> this layer's [B, kv_heads, end, head_dim] views."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        plan = self.plan
        if plan.start is not None:
            t = key_states.shape[-2]
            self.keys[:, :, plan.start : plan.start + t] = key_states
            self.values[:, :, plan.start : plan.start + t] = value_states
        else:  # indexed write: result dims [B, T, kv_heads, head_dim]
            self.keys[plan.rows, :, plan.positions] = key_states.transpose(1, 2)
            self.values[plan.rows, :, plan.positions] = value_states.transpose(1, 2)
        return self.keys[:, :, : plan.end], self.values[:, :, : plan.end]

    def get_mask_sizes(self, *args, **kwargs) -> tuple[int, int]:
        return self.plan.end, 0

    def get_seq_length(self) -> int:
        return self.plan.past


class TreeKVCache(Cache):
    """The KV cache of a batch of sequences; see the module docstring for the layout."""

    def __init__(self, num_layers: int, max_len: int, batch_size: int, device: torch.device | str = "cpu"):
        self.plan = _WritePlan()
        self.device = torch.device(device)
        super().__init__(layers=[RowStaticLayer(max_len, self.plan) for _ in range(num_layers)])
        self.max_len = max_len
        self.lengths = [0] * batch_size  # tokens of each row that are in the cache

    @property
    def batch_size(self) -> int:
        return len(self.lengths)

    def prepare(self, tokens_per_row: int) -> int:
        """Plan the next forward's writes (``tokens_per_row`` tokens after each row's length); returns the
        attention span, the key length the forward's attention bias must have."""
        plan, lengths = self.plan, self.lengths
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
            plan.rows = torch.arange(len(lengths), device=self.device)[:, None]  # [B, 1]
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

    def append(self, other: "TreeKVCache") -> None:
        """Add ``other``'s rows after these (new sequences join the batch). Both must have the same ``max_len``, and
        ``other`` must have run a forward (its buffers exist)."""
        if other.max_len != self.max_len:
            raise ValueError(f"cannot append a cache of {other.max_len} slots per row to one of {self.max_len}")
        for mine, theirs in zip(self.layers, other.layers):
            if not mine.is_initialized:  # a cache that never ran a forward: zero rows of the right shape first
                mine.lazy_initialization(theirs.keys[:0], theirs.values[:0])
            mine.keys = torch.cat([mine.keys, theirs.keys])
            mine.values = torch.cat([mine.values, theirs.values])
        self.lengths = self.lengths + other.lengths

    def keep_rows(self, rows: list[int]) -> None:
        """Keep only these rows (in this order): finished sequences leave the batch and cost nothing more."""
        if rows == list(range(len(self.lengths))):
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        for layer in self.layers:
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
        self.lengths = [self.lengths[r] for r in rows]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.plan.past
