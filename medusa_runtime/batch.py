"""The state a batch of sequences carries between verify steps, held in fixed slots: ``DecodeState``.

Its caches (``kv_cache.TreeKVCache`` and, for heads with prefix attention, ``prefix.PrefixKVCache``) are allocated
once for B slots. Its per-row fields (each marked ``per_row`` below: row i of every one is slot i of the caches) are
selected and assigned as one, by ``assign`` and ``compact``, written once over the fields rather than field by field.

Slot policy (how admissions and finished requests move rows, and why):

- a request is prefilled through ``slot_caches(start, stop)``, caches over its slots' own storage, so its keys and
  values are written where they stay; ``assign`` then records its rows. No other row is read or copied.
- a finished request is ``retire``d: its slot is marked free (its cache lengths 0). Nothing is copied.
- the next waiting request takes a free slot (``free_slots``, lowest first). Only when no request waits does
  ``compact`` fill a free slot below the last live row with that last row: one row's copy (its used positions) per
  such slot, so that the live rows are always slots ``0 .. n-1`` and a verify step runs over them alone (views of
  the buffers). The alternative, running all B slots with dead rows masked, would make every step of a draining
  queue cost B rows of compute; gathering the live rows would copy the whole cache every step.

This module decides which slot holds which row; it runs no model and knows nothing of trees or requests' tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from .kv_cache import TreeKVCache
from .lookup import ContextIndex
from .prefix import PrefixKVCache

PER_ROW = {"per_row": True}


@dataclass
class DecodeState:
    """What a batch carries between steps; row i of every per-row field is slot i of the caches, and the live rows
    are ``0 .. batch_size-1``. The caches own the rows' lengths (and with them the attention bias)."""

    cache: TreeKVCache  # per-row lengths: the root of row i goes at position cache.lengths[i]
    hidden: torch.Tensor = field(metadata=PER_ROW)  # [B, H] what the heads read at each row's last accepted token: its
    # last hidden state, or with prefix attention the prefix layer's output there
    root: torch.Tensor = field(metadata=PER_ROW)  # [B] each row's next token, already emitted, not yet in the cache
    rows: list[int] = field(metadata=PER_ROW)  # which prompt (of the batch, or of the served queue) each row decodes
    keys: list[int] = field(metadata=PER_ROW)  # each row's prompt key: keys its sampled draws (draws.py)
    emitted: list[int] = field(metadata=PER_ROW)  # tokens each row has emitted so far (its oracle's offset)
    indexes: list[ContextIndex] | None = field(default=None, metadata=PER_ROW)  # context lookup only: each row's text
    prefix: PrefixKVCache | None = None  # heads with prefix attention only: its keys and values of each row's answer
    free: set[int] = field(default_factory=set)  # live rows whose request has finished (until refilled or compacted)

    @property
    def batch_size(self) -> int:
        """Live rows, free ones included until ``compact``."""
        return len(self.rows)

    @property
    def slots(self) -> int:
        return self.cache.slots

    def caches(self) -> list:
        return [self.cache] + ([self.prefix] if self.prefix is not None else [])

    def per_row(self) -> list[str]:
        """The names of the per-row fields that are set (``indexes`` is None without context lookup)."""
        return [f.name for f in fields(self) if f.metadata.get("per_row") and getattr(self, f.name) is not None]

    def free_slots(self) -> list[int]:
        """Where a request can be prefilled: the freed rows, then the slots past the live rows; ascending."""
        return sorted(self.free) + list(range(self.batch_size, self.slots))

    def slot_caches(self, start: int, stop: int) -> tuple[TreeKVCache, PrefixKVCache | None]:
        """Caches over slots ``start .. stop-1`` (views of this batch's storage) for a prefill in place."""
        if any(s < self.batch_size and s not in self.free for s in range(start, stop)):
            raise ValueError(f"slots {start}..{stop - 1} hold a live row; prefill only into free_slots()")
        prefix = self.prefix.rows_view(start, stop) if self.prefix is not None else None
        return self.cache.rows_view(start, stop), prefix

    def assign(self, start: int, other: "DecodeState") -> None:
        """``other``'s rows (a prefill through ``slot_caches(start, ..)``) become rows ``start ..`` of this batch:
        every per-row field at once, and the caches' lengths (their contents are already in place)."""
        stop = start + other.batch_size
        if other.cache.layers[0].keys.data_ptr() != self.cache.layers[0].keys[start].data_ptr():
            raise ValueError(f"the rows assigned to slots {start}..{stop - 1} were not prefilled into them: "
                             f"prefill through slot_caches({start}, {stop})")
        for name in self.per_row():
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, torch.Tensor):
                setattr(self, name, torch.cat([mine[:start], theirs, mine[stop:]]))
            else:
                setattr(self, name, mine[:start] + list(theirs) + mine[stop:])
        for mine, theirs in zip(self.caches(), other.caches()):
            mine.occupy(start, theirs.lengths)
        self.free -= set(range(start, stop))

    def retire(self, row: int) -> None:
        """Row ``row``'s request has finished: its slot is free (cache lengths 0); nothing is copied."""
        self.free.add(row)
        for cache in self.caches():
            cache.release(row)

    def compact(self) -> int:
        """Drop the free rows so that the live rows are ``0 .. n-1`` again: a free row at the end goes, and a free
        row below the last live one takes that row (one row's copy in each cache). Returns the rows moved."""
        order = list(range(self.batch_size))  # new row -> old row
        free, moved = sorted(self.free), 0
        while free:
            last = len(order) - 1
            if free[-1] == last:  # nothing to move: the free row is the last one
                free.pop()
                order.pop()
                continue
            hole = free.pop(0)
            for cache in self.caches():  # the last row has never moved: it still sits in slot ``last``
                cache.move_row(last, hole)
            order[hole] = order.pop()
            moved += 1
        for cache in self.caches():
            cache.truncate(len(order))
        self._select(order)
        self.free = set()
        return moved

    def _select(self, order: list[int]) -> None:
        """Every per-row field becomes its rows ``order`` (the caches are the caller's)."""
        if order == list(range(self.batch_size)):
            return
        index = torch.tensor(order, dtype=torch.long, device=self.root.device)
        for name in self.per_row():
            value = getattr(self, name)
            setattr(self, name, value.index_select(0, index) if isinstance(value, torch.Tensor) else [value[i] for i in order])
