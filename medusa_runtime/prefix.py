"""Prefix attention (Hydra++): one small causal self-attention layer over the base model's hidden states of the
answer so far, whose output the heads read instead of the last hidden state.

A Medusa head sees one hidden state; this layer lets what the heads read at position t depend on every hidden
state from the last prompt token to t: z_t = x_t + Attn(norm(x))_t, then z_t += MLP(norm(z_t)), pre-norm like
the base model's own layers, multi-head, causal, no positional encoding (the hidden states carry positions).
Its output projections start at zero, so a fresh layer is the identity and heads given one guess exactly as
before. It starts at the last prompt token, not at the prompt's first: training, calibration and the runtime
all see the same window, and the base hidden states already summarise the prompt.

The runtime keeps the layer's own keys and values in a ``PrefixKVCache`` and feeds it, each step, the base hidden
states of the accepted path (the root included); ``PrefixAttention.extend`` runs the new rows against the cache,
so a step costs the layer on a few rows. Training and calibration call the same module over whole answers
(``forward``), and the tests hold the two equal. Checkpoint keys (in the heads' file): ``prefix.norm1.weight``
[H], ``prefix.qkv.weight`` [3H, H], ``prefix.out.weight`` [H, H], ``prefix.norm2.weight`` [H], ``prefix.up.weight``
[I, H], ``prefix.down.weight`` [H, I]; config.json field ``"medusa_prefix_attention": {"num_attention_heads": A,
"intermediate_size": I}``. This module does not decide where the hidden states come from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .kv_cache import SlotRows

CONFIG_KEY = "medusa_prefix_attention"
KEY_PREFIX = "prefix."


@dataclass(frozen=True)
class PrefixConfig:
    num_attention_heads: int = 9  # SmolLM2-135M's own: 576 / 9 = 64 per head
    intermediate_size: int = 1536

    def __post_init__(self):
        if self.num_attention_heads < 1 or self.intermediate_size < 1:
            raise ValueError(f"prefix attention needs num_attention_heads >= 1 and intermediate_size >= 1, got "
                             f"{self.num_attention_heads} and {self.intermediate_size}")

    def to_config(self) -> dict:
        return asdict(self)

    def shapes(self, hidden: int) -> dict[str, tuple[int, ...]]:
        """The checkpoint keys (``prefix.`` included) and their shapes for hidden size ``hidden``."""
        inner = self.intermediate_size
        return {f"{KEY_PREFIX}{k}": v for k, v in {"norm1.weight": (hidden,), "qkv.weight": (3 * hidden, hidden),
                                                   "out.weight": (hidden, hidden), "norm2.weight": (hidden,),
                                                   "up.weight": (inner, hidden), "down.weight": (hidden, inner)}.items()}


class PrefixKVCache(SlotRows):
    """The prefix layer's keys and values for a batch in fixed slots: k, v [slots, A, capacity, d], allocated once;
    live row b (slots ``0 .. n-1``) holds ``lengths[b]`` positions. Slots work as the main KV cache's do
    (``kv_cache.SlotRows``: ``rows_view`` for a prefill in place, ``occupy``, ``release``, ``move_row``)."""

    def __init__(self, batch: int, heads: int, head_dim: int, capacity: int, device, dtype,
                 storage: tuple[torch.Tensor, torch.Tensor] | None = None):
        """``batch`` slots, all live at length 0; ``storage``: (k, v) to use instead of allocating (``rows_view``)."""
        if storage is None:
            storage = (torch.zeros(batch, heads, capacity, head_dim, device=device, dtype=dtype),
                       torch.zeros(batch, heads, capacity, head_dim, device=device, dtype=dtype))
        self.k, self.v = storage
        self.lengths = [0] * batch

    def storage(self) -> list[torch.Tensor]:
        return [self.k, self.v]

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def rows_view(self, start: int, stop: int) -> "PrefixKVCache":
        """A cache over slots ``start .. stop-1`` of this one's storage (views), those slots live at length 0."""
        return PrefixKVCache(stop - start, 0, 0, 0, None, None, storage=(self.k[start:stop], self.v[start:stop]))

    def span(self, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The live rows' first ``end`` positions: k, v [n, A, end, d] (views)."""
        n = len(self.lengths)
        return self.k[:n, :, :end], self.v[:n, :, :end]

    def write(self, k: torch.Tensor, v: torch.Tensor, counts: list[int]) -> int:
        """Append live row b's first ``counts[b]`` new keys and values (k, v [n, A, T, d], padded to T) after its
        length; returns the span every row's attention must cover (the longest new length)."""
        if len(counts) != len(self.lengths):
            raise ValueError(f"{len(counts)} new-row counts for a cache of {len(self.lengths)} sequences")
        end = max(n + k.shape[2] for n in self.lengths)
        if end > self.capacity:
            raise ValueError(f"prefix cache of {self.capacity} positions cannot take {k.shape[2]} more after "
                             f"{max(self.lengths)}; allocate it with room for every new token")
        for b, (n, count) in enumerate(zip(self.lengths, counts)):
            self.k[b, :, n : n + count] = k[b, :, :count]
            self.v[b, :, n : n + count] = v[b, :, :count]
        self.lengths = [n + count for n, count in zip(self.lengths, counts)]
        return max(self.lengths)


class PrefixAttention(nn.Module):
    """One pre-norm decoder layer over hidden states, starting as the identity (see the module docstring)."""

    def __init__(self, hidden: int, config: PrefixConfig):
        super().__init__()
        if hidden % config.num_attention_heads:
            raise ValueError(f"prefix attention: hidden size {hidden} is not a multiple of num_attention_heads "
                             f"{config.num_attention_heads}")
        self.config = config
        self.heads, self.head_dim = config.num_attention_heads, hidden // config.num_attention_heads
        self.norm1, self.norm2 = nn.RMSNorm(hidden, eps=1e-5), nn.RMSNorm(hidden, eps=1e-5)
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden, bias=False)
        self.up = nn.Linear(hidden, config.intermediate_size, bias=False)
        self.down = nn.Linear(config.intermediate_size, hidden, bias=False)
        nn.init.normal_(self.qkv.weight, std=0.02)
        nn.init.normal_(self.up.weight, std=0.02)
        nn.init.zeros_(self.out.weight)  # identity at first: heads read h exactly
        nn.init.zeros_(self.down.weight)

    def new_cache(self, batch: int, capacity: int) -> PrefixKVCache:
        param = self.qkv.weight
        return PrefixKVCache(batch, self.heads, self.head_dim, capacity, param.device, param.dtype)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, T, H] -> q, k, v [B, A, T, d]."""
        B, T, _ = x.shape
        return self.qkv(self.norm1(x)).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def _finish(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """x [B, T, H], attention output [B, A, T, d] -> z [B, T, H]."""
        x = x + self.out(attn.transpose(1, 2).flatten(2))
        return x + self.down(F.silu(self.up(self.norm2(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Whole sequences (training, calibration): x [B, T, H] hidden states from the last prompt token on, right-
        padded to T (causal: a real row never sees the padding after it) -> z [B, T, H]."""
        T = x.shape[1]
        q, k, v = self._qkv(x)
        positions = torch.arange(T, device=x.device)
        visible = positions[None, :] <= positions[:, None]  # [T, T] causal
        return self._finish(x, F.scaled_dot_product_attention(q, k, v, attn_mask=visible[None, None]))

    def extend(self, cache: PrefixKVCache, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """The runtime's step: row b's ``counts[b]`` new hidden states x [B, T, H] (right-padded to T) join its cache;
        -> z [B, H] at each row's last new position (what the heads read next)."""
        B, T, _ = x.shape
        starts = torch.tensor(cache.lengths, device=x.device)  # [B]
        q, k, v = self._qkv(x)
        span = cache.write(k, v, counts)
        keys = torch.arange(span, device=x.device)
        at = starts[:, None] + torch.arange(T, device=x.device)  # [B, T]: each new row's position in its sequence
        visible = keys[None, None, :] <= at[:, :, None]  # [B, T, span]: causal over the row's own cache
        k_all, v_all = cache.span(span)  # [B, A, span, d]
        attn = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=visible[:, None])
        z = self._finish(x, attn)  # [B, T, H]
        last = torch.tensor(counts, device=x.device) - 1
        return z[torch.arange(B, device=x.device), last]
