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

from medusa_runtime.files import is_int, json_type, read_json_object, write_text_atomic

STATS_FORMAT = "medusa-calibration"
STATS_VERSION = 1


class StatsError(ValueError):
    """Stats that cannot be used; the message names the file, the field and the fix."""


@dataclass
class CalibrationStats:
    num_heads: int
    topk: int
    rollouts: list[list[list[int]]]  # [prompt][position][head] rank or -1; position 0 = last prompt token
    new_tokens: list[int]  # tokens generated per prompt (the replay emits exactly these)
    provenance: dict = field(default_factory=dict)
    prompt_indices: list[int] | None = None  # each rollout's index in the selected prompt list (None: 0, 1, 2, ...)
    prompt_tokens: list[int] | None = None  # each rollout's prompt length in tokens (what a prefill costs); None in older stats

    def sampling(self) -> dict:
        """The sampling settings the rollouts were drawn with (stats that predate the field are greedy)."""
        return self.provenance.get("sampling") or {"temperature": 0.0}

    def indices(self) -> list[int]:
        return list(range(len(self.rollouts))) if self.prompt_indices is None else self.prompt_indices

    def prompt_lengths(self) -> list[int | None]:
        """Each rollout's prompt length in tokens (None throughout in stats that predate the field)."""
        return list(self.prompt_tokens) if self.prompt_tokens is not None else [None] * len(self.rollouts)

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

    def chain_conditionals(self) -> list[float]:
        """P(head k's rank 0 right | heads 1..k-1's rank 0 right) for k = 2..K: count(0,..,0 [k]) / count(0,..,0 [k-1])
        from the prefix counts (0 where no position has the shorter prefix). How much a path of top-1 guesses keeps
        after its first hit: how well the heads follow their own path."""
        counts = self.prefix_counts()
        return [counts.get((0,) * k, 0) / counts[(0,) * (k - 1)] if counts.get((0,) * (k - 1)) else 0.0
                for k in range(2, self.num_heads + 1)]

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
            "prompt_indices": self.indices(),
            **({"prompt_tokens": self.prompt_tokens} if self.prompt_tokens is not None else {}),
            "rollouts": self.rollouts,
        }

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_json(), separators=(",", ":")) + "\n")


REDO = "re-run 'treeopt calibrate'"


def load_stats(path: str | Path) -> CalibrationStats:
    """Read stats and check every field ``build``, ``evaluate`` and the replay index into."""
    path = Path(path)
    data = read_json_object(path, "stats", f"make one with 'treeopt calibrate --out {path}'", StatsError)
    if data.get("format") != STATS_FORMAT:
        raise StatsError(f"{path}: field 'format' must be {STATS_FORMAT!r}; is this a 'treeopt calibrate' output?")
    if data.get("version") != STATS_VERSION:
        raise StatsError(f"{path}: field 'version' is {data.get('version')!r}; this treeopt reads version {STATS_VERSION}")
    for key in ("num_heads", "topk", "rollouts", "new_tokens"):
        if key not in data:
            raise StatsError(f"{path}: field {key!r} is missing; {REDO}")
    num_heads, topk, rollouts, new_tokens = data["num_heads"], data["topk"], data["rollouts"], data["new_tokens"]
    for key, value in (("num_heads", num_heads), ("topk", topk)):
        if not is_int(value) or value < 1:
            raise StatsError(f"{path}: field {key!r} must be a positive integer, got {value!r}; {REDO}")
    if not isinstance(new_tokens, list) or not all(is_int(n) and n >= 0 for n in new_tokens):
        raise StatsError(f"{path}: field 'new_tokens' must be a list of token counts (integers >= 0); {REDO}")
    if not isinstance(rollouts, list):
        raise StatsError(f"{path}: field 'rollouts' must be a list (one per prompt), got a {json_type(rollouts)}; {REDO}")
    if len(rollouts) != len(new_tokens):
        raise StatsError(f"{path}: 'rollouts' and 'new_tokens' differ in length ({len(rollouts)} and {len(new_tokens)}); {REDO}")
    for i, (rows, n_new) in enumerate(zip(rollouts, new_tokens)):
        _check_rows(path, i, rows, n_new, num_heads, topk)
    provenance = data.get("provenance", {})
    if not isinstance(provenance, dict):
        raise StatsError(f"{path}: field 'provenance' must be an object, got a {json_type(provenance)}; remove it or {REDO}")
    indices = data.get("prompt_indices")
    if indices is not None and (not isinstance(indices, list) or len(indices) != len(rollouts)
                                or not all(is_int(i) and i >= 0 for i in indices) or len(set(indices)) != len(indices)):
        raise StatsError(f"{path}: field 'prompt_indices' must list one distinct prompt index (integer >= 0) per rollout; {REDO}")
    lengths = data.get("prompt_tokens")
    if lengths is not None and (not isinstance(lengths, list) or len(lengths) != len(rollouts)
                                or not all(is_int(n) and n >= 1 for n in lengths)):
        raise StatsError(f"{path}: field 'prompt_tokens' must list one prompt length (integer >= 1) per rollout; remove it or {REDO}")
    return CalibrationStats(num_heads, topk, rollouts, new_tokens, provenance, indices, lengths)


def _check_rows(path: Path, i: int, rows, n_new: int, num_heads: int, topk: int) -> None:
    """rollouts[i]: one row of ``num_heads`` ranks in -1..topk-1 per position, enough rows to replay ``n_new`` tokens."""
    shape = f"a list of rows of {num_heads} ranks (integers from -1 to {topk - 1})"
    if not isinstance(rows, list):
        raise StatsError(f"{path}: field 'rollouts[{i}]' must be {shape}, got a {json_type(rows)}; {REDO}")
    ranks = range(-1, topk)
    for t, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != num_heads or not all(is_int(r) and r in ranks for r in row):
            raise StatsError(f"{path}: field 'rollouts[{i}][{t}]' = {_short(row)} is not a row of {num_heads} ranks "
                             f"(integers from -1 to {topk - 1}); {REDO}")
    if n_new > len(rows) + 1:  # the replay reads the row of every emitted token but the last
        raise StatsError(f"{path}: field 'new_tokens[{i}]' = {n_new} needs at least {n_new - 1} rows in 'rollouts[{i}]', "
                         f"which has {len(rows)}; {REDO}")


def _short(value, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def replay_per_prompt(stats: CalibrationStats, paths) -> list[tuple[int, int]]:
    """(tokens, steps) of decoding each calibration prompt with this tree; steps include the prefill.
    Prompts that generated nothing contribute (0, 0)."""
    tree = set(map(tuple, paths))
    depth_limit = max((len(p) for p in tree), default=0)
    out = []
    for rows, n_new in zip(stats.rollouts, stats.new_tokens):
        if n_new == 0:
            out.append((0, 0))
            continue
        emitted, steps = 1, 1  # the prefill emits the first token
        while emitted < n_new:
            row = rows[emitted - 1]  # hidden state of the last emitted token's position
            d = 0
            while d < depth_limit and d < len(row) and row[d] >= 0 and tuple(row[: d + 1]) in tree:
                d += 1
            emitted += d + 1
            steps += 1
        out.append((n_new, steps))
    return out


def replay_steps(stats: CalibrationStats, paths) -> tuple[int, int]:
    """(tokens, steps) of decoding all calibration prompts with this tree; steps include the prefill."""
    per_prompt = replay_per_prompt(stats, paths)
    return sum(t for t, _ in per_prompt), sum(s for _, s in per_prompt)


def replay_tokens_per_step(stats: CalibrationStats, paths) -> float:
    tokens, steps = replay_steps(stats, paths)
    return tokens / max(steps, 1)


def subset(stats: CalibrationStats, prompts: list[int]) -> CalibrationStats:
    """The stats of these prompts only (indices into ``stats.rollouts``), same heads and top-k."""
    indices = stats.indices()
    lengths = None if stats.prompt_tokens is None else [stats.prompt_tokens[i] for i in prompts]
    return CalibrationStats(stats.num_heads, stats.topk, [stats.rollouts[i] for i in prompts],
                            [stats.new_tokens[i] for i in prompts], dict(stats.provenance), [indices[i] for i in prompts], lengths)


# provenance that every shard of one run shares (and the merged stats keep)
SHARD_INVARIANTS = ("model", "heads_sha256", "dtype", "device", "tool", "max_new_tokens", "prompt_source", "select",
                    "rollout", "prompts_total", "sampling", "drafts")


def shard_of(name: str, stats: CalibrationStats) -> tuple[int, int]:
    """(I, N) from the provenance of a ``calibrate --shard I/N`` output, checked."""
    shard = stats.provenance.get("shard")
    if not (isinstance(shard, list) and len(shard) == 2 and all(is_int(x) for x in shard)):
        raise StatsError(f"{name}: field 'provenance.shard' is missing; merge only outputs of 'treeopt calibrate --shard I/N'")
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise StatsError(f"{name}: field 'provenance.shard' = {shard} is not a shard I/N with 0 <= I < N; re-run that shard")
    return index, count


def merge_shards(shards: list[tuple[str, CalibrationStats]]) -> CalibrationStats:
    """The stats of one run over all prompts, from the stats of its ``calibrate --shard I/N`` jobs.

    Each shard must say which shard it is (provenance ``shard`` = [I, N]); all N must be there once, from
    the same model, heads, device, prompts and settings. Rollouts are put back in prompt order and the
    provenance is shard 0's, so the result does not depend on the order the files are given in; it is
    the one-run stats (its provenance lists the shard files instead of one command)."""
    if not shards:
        raise StatsError("merge-stats: no stats files given")
    numbered = sorted(((shard_of(name, stats), name, stats) for name, stats in shards), key=lambda x: x[0])
    (_, count), first_name, first = numbered[0]
    seen: dict[int, str] = {}
    for (index, n), name, stats in numbered:
        if n != count:
            raise StatsError(f"{name}: shard {index}/{n}, but {first_name} is one of {count} shards; merge the shards of one run")
        if (stats.num_heads, stats.topk) != (first.num_heads, first.topk):
            raise StatsError(f"{name}: {stats.num_heads} heads, top-{stats.topk}; {first_name} has {first.num_heads} heads, "
                             f"top-{first.topk}; calibrate every shard with the same heads and --topk")
        for key in SHARD_INVARIANTS:
            if stats.provenance.get(key) != first.provenance.get(key):
                raise StatsError(f"{name}: {key} is {stats.provenance.get(key)!r} but {first.provenance.get(key)!r} in "
                                 f"{first_name}; every shard must come from the same calibrate command")
        if index in seen:
            raise StatsError(f"{name}: shard {index}/{count} is also {seen[index]}; give each shard once")
        seen[index] = name
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        raise StatsError(f"merge-stats: shards {', '.join(f'{i}/{count}' for i in missing)} are missing; "
                         f"run 'treeopt calibrate --shard I/{count}' for them")
    rows = sorted(((index, rollout, n_new, name, length) for _, name, stats in numbered
                   for index, rollout, n_new, length in zip(stats.indices(), stats.rollouts, stats.new_tokens,
                                                            stats.prompt_tokens or [None] * len(stats.rollouts))),
                  key=lambda r: r[0])
    total = first.provenance.get("prompts_total", len(rows))
    for position, (index, _, _, name, _) in enumerate(rows):
        if index != position:
            raise StatsError(f"{name}: holds prompt {index} where prompt {position} of {total} belongs (a prompt given twice "
                             f"or missing); re-run the shards with the same --prompts and --select")
    if len(rows) != total:
        raise StatsError(f"merge-stats: the shards hold {len(rows)} prompts, the run has {total}; re-run the missing shards")
    provenance = {k: v for k, v in first.provenance.items() if k not in ("shard", "command", "date")}
    provenance.update({"prompts": total, "merged_from": [name for _, name, _ in numbered]})
    lengths = [r[4] for r in rows]
    return CalibrationStats(first.num_heads, first.topk, [r[1] for r in rows], [r[2] for r in rows], provenance,
                            prompt_tokens=None if None in lengths else lengths)
