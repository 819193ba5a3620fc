"""Context lookup: a draft token copied from earlier in the sequence, put first in a head's ranking.

Small models' greedy answers repeat themselves and their prompts (names, code identifiers, list patterns,
loops), and a head that reads one hidden state guesses those copies badly. So, as prompt lookup decoding
does, each tree node also gets a proposal from the text itself: take the node's whole sequence (prompt,
accepted tokens, the root, then the draft tokens on the node's own path), find the most recent earlier
occurrence of its last n tokens for the longest n from ``max_match`` down to ``min_match`` that occurs, and
propose the token that followed it. ``merge`` puts that proposal at rank 0 of the head's ranking and the
head's own ranking after it (its copy of the proposal removed), so the list keeps its length and a tree's
"rank r of head d along the path" still names one token per node: tree specs, buffers, acceptance and
calibration's stats are unchanged, and calibration replays the runtime because both find the same proposal:
calibration with ``propose`` over whole answers at once, the runtime with a ``ContextIndex`` per sequence (its
n-grams' latest positions, grown as tokens are accepted, so a node costs a few dictionary lookups instead of a
pass over the history); the tests hold the two equal.

The setting belongs to the heads (``"medusa_context_lookup": {"min_match": m, "max_match": M}`` in their
config.json), so every consumer of the same heads folder guesses the same tokens. It does not learn
anything, offers one proposal per node, and never touches verification: decoding stays lossless.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

CONFIG_KEY = "medusa_context_lookup"
MAX_MATCH_LIMIT = 16


@dataclass(frozen=True)
class ContextLookup:
    """Match the last n tokens, longest n first, from ``max_match`` down to ``min_match``."""

    min_match: int = 2
    max_match: int = 4

    def __post_init__(self):
        if not 1 <= self.min_match <= self.max_match <= MAX_MATCH_LIMIT:
            raise ValueError(f"context lookup needs 1 <= min_match <= max_match <= {MAX_MATCH_LIMIT}, "
                             f"got min_match={self.min_match}, max_match={self.max_match}")

    def to_config(self) -> dict:
        return asdict(self)


@torch.no_grad()
def propose(seqs: torch.Tensor, lengths: torch.Tensor, lookup: ContextLookup) -> torch.Tensor:
    """seqs [P, T] token ids, lengths [P] (row p is seqs[p, :lengths[p]]; what lies after is ignored) -> [P] the
    token that followed the most recent earlier occurrence of each row's longest matching suffix, -1 where none."""
    P, T = seqs.shape
    if len(lengths) and int(lengths.max()) > T:
        raise ValueError(f"a row length of {int(lengths.max())} exceeds the {T} tokens given")
    out = torch.full((P,), -1, dtype=torch.long, device=seqs.device)
    lengths = lengths.to(seqs.device)
    for n in range(lookup.max_match, lookup.min_match - 1, -1):
        if T <= n:
            continue
        windows = seqs.unfold(1, n, 1)  # [P, T-n+1, n]: windows[p, s] = seqs[p, s:s+n]
        at = (lengths[:, None] - n + torch.arange(n, device=seqs.device)).clamp(min=0)  # [P, n]
        suffix = seqs.gather(1, at)  # [P, n]: each row's last n tokens
        starts = torch.arange(windows.shape[1], device=seqs.device)  # [W]
        # an earlier occurrence is followed by a token inside the row: s + n <= length - 1 (not the suffix itself)
        hit = (windows == suffix[:, None, :]).all(-1) & (starts[None, :] + n < lengths[:, None])  # [P, W]
        last = torch.where(hit, starts[None, :], -1).max(-1).values  # [P]
        found = (last >= 0) & (out < 0)
        follow = seqs.gather(1, (last + n).clamp(min=0, max=T - 1)[:, None])[:, 0]  # [P]
        out = torch.where(found, follow, out)
    return out


def merge(ranked: torch.Tensor, proposal: torch.Tensor) -> torch.Tensor:
    """ranked [..., k] token ids, best first; proposal [...] (-1: none) -> [..., k]: the proposal first, then the
    ranking without it, cut to k. Rows without a proposal are unchanged."""
    k = ranked.shape[-1]
    dup = ranked == proposal[..., None]  # [..., k]
    positions = torch.arange(k, device=ranked.device).expand_as(ranked)
    order = torch.where(dup, k, positions).argsort(dim=-1, stable=True)  # the proposal's own copy goes last
    rest = ranked.gather(-1, order)
    merged = torch.cat([proposal[..., None], rest[..., :-1]], dim=-1)
    return torch.where((proposal >= 0)[..., None], merged, ranked)


def true_path_proposals(ids: torch.Tensor, prompt_len: int, rows: int, num_heads: int, lookup: ContextLookup) -> torch.Tensor:
    """Teacher forcing over one answer: ids [T] (prompt + answer) -> [rows, K], head k's proposal at new-token position
    t (0 = the last prompt token), whose node's text ends with new token t+k+1 (the root, then the true path); rows
    past the answer's end read it only up to its end."""
    seqs = ids.expand(rows, -1)  # [rows, T]: propose reads each row only up to its length
    cols = [propose(seqs, (torch.arange(rows) + prompt_len + 1 + k).clamp(max=len(ids)), lookup) for k in range(num_heads)]
    return torch.stack(cols, dim=1)


class ContextIndex:
    """One sequence's n-gram positions for the runtime: ``propose(path)`` equals ``propose`` on the history followed
    by ``path``, in O(len(path)) per match length instead of O(history). ``extend`` appends accepted tokens."""

    def __init__(self, lookup: ContextLookup, tokens: list[int]):
        self.lookup = lookup
        self.tokens: list[int] = []
        # n-gram -> start of its latest occurrence that a history token follows (s + n <= len(tokens) - 1)
        self.latest: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    def extend(self, tokens: list[int]) -> None:
        before = len(self.tokens)
        self.tokens.extend(tokens)
        for n in range(self.lookup.min_match, self.lookup.max_match + 1):
            for s in range(max(before - n, 0), len(self.tokens) - n):  # windows that now have a token after them
                self.latest[tuple(self.tokens[s : s + n])] = s

    def propose(self, path: list[int]) -> int:
        """The proposal for the sequence history + path (-1: none)."""
        hist, d = self.tokens, len(path)
        offset = max(len(hist) - self.lookup.max_match, 0)
        tail = hist[offset:] + path  # every window that overlaps the path lies in here
        total = len(hist) + d
        for n in range(self.lookup.max_match, self.lookup.min_match - 1, -1):
            if total <= n:
                continue
            suffix = tail[len(tail) - n :]
            for s in range(total - n - 1, max(len(hist) - n, 0) - 1, -1):  # windows ending in the path, latest first
                if tail[s - offset : s - offset + n] == suffix:
                    return tail[s - offset + n]
            s = self.latest.get(tuple(suffix))  # the rest lie in the history, followed by a history token
            if s is not None:
                return hist[s + n]
        return -1
