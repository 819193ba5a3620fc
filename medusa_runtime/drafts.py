"""How the heads order their guesses (the drafts): by their own logits, or coupled with the target's keyed draws.

Mode drafts rank a head's guesses by its logits, so a node's first child is the head's most likely token. Coupled
drafts (``SamplingConfig.draft_rule == "coupled"``) rank the guesses for absolute position j by
``logits / tau + G_j``: ``G_j`` is the Gumbel noise the target draws position j's token with (``draws.py``: keyed by
seed, prompt and j, the same at every tree node of that position) and ``tau`` the head's temperature. The top-k of
that order is a sample without replacement from the head's distribution at ``tau`` whose first element equals the
target's draw whenever the two distributions' Gumbel argmaxes coincide: far more often than the target's draw
equals the head's mode when the head is close to the target (Gumbel coupling; Daliri, Musco and Suresh, 2024).
Only the order changes: the target still draws every emitted token, so the text is plain keyed sampling's.

The runtime (``decoding.py``) and calibration build their orders here, so both rank alike. A position's noise is
drawn once per row (``KeyedNoise`` keeps recent rows, and the target's draws there reuse them) and only the draft
vocabulary's columns of it are read. This module picks no tokens and decides no acceptance: it returns the
``order`` functions that ``MedusaHeads.candidates`` / ``path_candidates`` rank by (None: the logits themselves).
"""

from __future__ import annotations

import torch

from .heads import Order
from .sampling import SamplingConfig


class DraftOrder:
    """The order of one decoder's (or one calibration's) drafts: mode, or coupled at each head's temperature."""

    def __init__(self, sampling: SamplingConfig, num_heads: int, columns: torch.Tensor | None, device: torch.device):
        """``columns``: the heads' draft vocabulary (the token id of each logit column), None for the whole vocabulary."""
        self.coupled = sampling.draft_rule == "coupled"
        taus = sampling.head_temperatures(num_heads) if self.coupled else [1.0] * num_heads
        self.inv_tau = torch.tensor([1.0 / t for t in taus], dtype=torch.float32, device=device)  # [K]
        self.columns = None if columns is None else columns.to(device)

    def _noise(self, noise, keys: list[int], positions: list[int]) -> torch.Tensor:
        """The target's noise at each (key, position), the draft columns only -> [rows, V']."""
        return noise.gumbel(keys, positions, self.columns)

    def heads(self, noise, keys: list[int], roots: list[int], count: int) -> Order | None:
        """For ``candidates`` over each row's first ``count`` heads, whose head k guesses position ``roots[b] + k + 1``
        (``roots``: each row's root position): logits [B, count, V'] -> scores [B, count, V']."""
        if not self.coupled:
            return None
        g = torch.stack([self._noise(noise, keys, [p + k + 1 for p in roots]) for k in range(count)], dim=1)  # [B, count, V']
        scale = self.inv_tau[:count, None]  # [count, 1]
        return lambda logits: logits.float() * scale + g

    def head(self, noise, keys: list[int], roots: list[int], i: int) -> Order | None:
        """For ``path_candidates`` of head i over P nodes of every row (position ``roots[b] + i + 1``): logits
        [B, P, V'] -> scores [B, P, V']."""
        if not self.coupled:
            return None
        g = self._noise(noise, keys, [p + i + 1 for p in roots])[:, None, :]  # [B, 1, V']
        scale = self.inv_tau[i]
        return lambda logits: logits.float() * scale + g

    def along(self, noise, key: int, first: int, rows: int, count: int) -> Order | None:
        """For calibration over one answer: row t's head k guesses position ``first + t + k`` -> an order on logits
        [rows, count, V']."""
        if not self.coupled:
            return None
        g = self._noise(noise, [key] * (rows + count), list(range(first, first + rows + count)))  # [rows + count, V']
        windows = torch.stack([g[k : k + rows] for k in range(count)], dim=1)  # [rows, count, V']
        scale = self.inv_tau[:count, None]
        return lambda logits: logits.float() * scale + windows
