"""Calibration statistics: what ``calibrate`` measures and ``build``/``evaluate`` read. Pure Python.

For every calibration position t (the last prompt token and every generated token), ``ranks[t][k]`` is
the rank of the true token t+k+2 in head k's (0-based) top-k, or -1 for a miss (or no such token).
From these rows come the per-head accuracies a[k][r], the prefix-count trie (how many positions have
rank rows starting with each path: the joint statistics, no independence assumption), and an exact
replay of decoding with any tree: a step at position t accepts the longest prefix of ranks[t] that is
a tree path, emits it plus the bonus token, and jumps by that many positions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

STATS_FORMAT = "medusa-calibration"
STATS_VERSION = 1


class StatsError(ValueError):
    pass


@dataclass
class CalibrationStats:
    num_heads: int
    topk: int
    rollouts: list[list[list[int]]]  # [prompt][position][head] rank or -1; position 0 = last prompt token
    new_tokens: list[int]  # tokens generated per prompt (the replay emits exactly these)
    provenance: dict = field(default_factory=dict)

    @property
    def positions(self) -> int:
        return sum(len(r) for r in self.rollouts)

    def accuracy(self) -> list[list[float]]:
        """a[k][r] = P(rank r of head k is the true token), each head over its own valid positions."""
        hits = [[0] * self.topk for _ in range(self.num_heads)]
        valid = [0] * self.num_heads
        for rows, n_new in zip(self.rollouts, self.new_tokens):
            for t, row in enumerate(rows):
                for k, r in enumerate(row):
                    if t + k + 2 <= n_new:  # target token t+k+2 (1-based new-token index) exists
                        valid[k] += 1
                        if r >= 0:
                            hits[k][r] += 1
        return [[h / max(valid[k], 1) for h in hits[k]] for k in range(self.num_heads)]

    def prefix_counts(self) -> dict[tuple[int, ...], int]:
        """How many positions have a rank row starting with each path (the trie, flattened)."""
        counts: dict[tuple[int, ...], int] = {}
        for rows in self.rollouts:
            for row in rows:
                for d in range(len(row)):
                    if row[d] < 0:
                        break
                    key = tuple(row[: d + 1])
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def to_json(self) -> dict:
        counts = self.prefix_counts()
        return {
            "format": STATS_FORMAT,
            "version": STATS_VERSION,
            "provenance": self.provenance,
            "num_heads": self.num_heads,
            "topk": self.topk,
            "positions": self.positions,
            "accuracy": self.accuracy(),
            "prefix_counts": {".".join(map(str, k)): v for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))},
            "new_tokens": self.new_tokens,
            "rollouts": self.rollouts,
        }

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n", encoding="utf-8")
        tmp.replace(path)


def load_stats(path: str | Path) -> CalibrationStats:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StatsError(f"{path}: no such stats file; make one with 'treeopt calibrate --out {path}'") from None
    except json.JSONDecodeError as err:
        raise StatsError(f"{path}: not valid JSON ({err.msg}); re-run 'treeopt calibrate'") from None
    if not isinstance(data, dict) or data.get("format") != STATS_FORMAT:
        raise StatsError(f"{path}: field 'format' must be {STATS_FORMAT!r}; is this a 'treeopt calibrate' output?")
    if data.get("version") != STATS_VERSION:
        raise StatsError(f"{path}: field 'version' is {data.get('version')!r}; this treeopt reads version {STATS_VERSION}")
    for key in ("num_heads", "topk", "rollouts", "new_tokens"):
        if key not in data:
            raise StatsError(f"{path}: field {key!r} is missing; re-run 'treeopt calibrate'")
    if len(data["rollouts"]) != len(data["new_tokens"]):
        raise StatsError(f"{path}: 'rollouts' and 'new_tokens' differ in length")
    return CalibrationStats(data["num_heads"], data["topk"], data["rollouts"], data["new_tokens"], data.get("provenance", {}))


def replay_steps(stats: CalibrationStats, paths) -> tuple[int, int]:
    """(tokens, steps) of decoding the calibration prompts with this tree; steps include the prefill."""
    tree = set(map(tuple, paths))
    depth_limit = max((len(p) for p in tree), default=0)
    tokens = steps = 0
    for rows, n_new in zip(stats.rollouts, stats.new_tokens):
        if n_new == 0:
            continue
        emitted, s = 1, 1  # the prefill emits the first token
        while emitted < n_new:
            row = rows[emitted - 1]  # hidden state of the last emitted token's position
            d = 0
            while d < depth_limit and d < len(row) and row[d] >= 0 and tuple(row[: d + 1]) in tree:
                d += 1
            emitted += d + 1
            s += 1
        tokens += n_new
        steps += s
    return tokens, steps


def replay_tokens_per_step(stats: CalibrationStats, paths) -> float:
    tokens, steps = replay_steps(stats, paths)
    return tokens / max(steps, 1)
