"""Fitting the head temperature of coupled drafts on the calibration prompts. Pure Python (stats only).

Coupled drafts rank head k's guesses by ``logits / tau_k + G`` (``medusa_runtime/drafts.py``). Calibration ranks
every answer under each temperature of a grid (``GRID`` times the sampling temperature); since the heads are fed the
true path, head k's ranks depend on ``tau_k`` alone, so the stats of any per-head choice are columns picked from
those rank tables (``combine``). A choice is scored by the cross-validated tokens/step over the calibration prompts
(``crossval.py``: trees built without the prompts they are replayed on), averaged over ``SIZES``.

Two fits are made: one temperature for all heads (the grid's best), and one per head (coordinate ascent from that,
one pass over the heads). Which one is kept is decided on held-out prompts, never on the prompts it was fitted on:
the calibration prompts are split in two halves; each fit is made on one half and its tree (built on that half)
replayed on the other, both ways; per head wins only if its held-out tokens/step is higher. The kept rule is then
fitted again on all calibration prompts. Bench prompts are never seen here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .builder import build_tree
from .crossval import cross_validate, prompt_folds
from .stats import CalibrationStats, replay_per_prompt, subset

GRID = (0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4, 1.7)  # head temperatures tried, as multiples of the sampling temperature
SIZES = (5, 15, 63)  # tree sizes (paths) the fit scores: 6, 16 and 64 nodes
FOLDS = 5
MIN_PROMPTS = 4  # prompts that generated tokens: two halves of two cross-validation folds each


@dataclass
class HeadTemperatureFit:
    """The chosen head temperatures and the figures behind the choice (what stats record)."""

    temperatures: list[float]  # one per head (equal throughout when one for all was kept)
    per_head: bool  # whether each head has its own
    grid: list[float]  # the temperatures tried
    held_out: dict[str, float]  # "one" / "per_head": tokens/step on held-out halves, averaged over SIZES
    scores: dict[str, float]  # cross-validated tokens/step on all calibration prompts of each grid point and the fits

    def to_json(self) -> dict:
        return {"temperatures": self.temperatures, "per_head": self.per_head, "grid": self.grid,
                "held_out": self.held_out, "scores": self.scores, "sizes": [n + 1 for n in SIZES]}


def combine(tables: list[CalibrationStats], choice: list[int]) -> CalibrationStats:
    """The stats whose head k ranks are those of ``tables[choice[k]]`` (every table: the same answers)."""
    first = tables[0]
    rollouts = [[[tables[c].rollouts[p][t][k] for k, c in enumerate(choice)] for t in range(len(rows))]
                for p, rows in enumerate(first.rollouts)]
    return CalibrationStats(first.num_heads, first.topk, rollouts, list(first.new_tokens), dict(first.provenance),
                            first.prompt_indices, first.prompt_tokens)


def _score(stats: CalibrationStats) -> float:
    """Cross-validated tokens/step, averaged over SIZES (sizes past what the stats can fill count what they fill)."""
    cv = cross_validate(stats, list(SIZES), "empirical", folds=FOLDS)
    return sum(cv.tokens_per_step(n) for n in SIZES) / len(SIZES)


def _fit_one(tables: list[CalibrationStats]) -> list[int]:
    """One grid point for every head: the best score."""
    heads = tables[0].num_heads
    best = max(range(len(tables)), key=lambda j: (round(_score(combine(tables, [j] * heads)), 9), -abs(j - len(tables) // 2)))
    return [best] * heads


def _fit_per_head(tables: list[CalibrationStats]) -> list[int]:
    """A grid point per head: from the best common one, each head in turn moved to its best point, the others held."""
    choice = _fit_one(tables)
    for k in range(len(choice)):
        def score(j: int) -> float:
            return _score(combine(tables, choice[:k] + [j] + choice[k + 1:]))
        current = score(choice[k])
        for j in range(len(tables)):
            value = score(j)
            if value > current + 1e-9:
                choice[k], current = j, value
    return choice


def _held_out(tables: list[CalibrationStats], fit) -> float:
    """Tokens/step of ``fit`` made on one half of the prompts, its tree built there and replayed on the other half,
    both ways, pooled, averaged over SIZES."""
    halves = prompt_folds(tables[0], 2)
    tokens = {n: 0 for n in SIZES}
    steps = {n: 0 for n in SIZES}
    for train, test in ((halves[0], halves[1]), (halves[1], halves[0])):
        choice = fit([subset(t, train) for t in tables])
        built = build_tree(subset(combine(tables, choice), train), max(SIZES), "empirical", strict=False)
        held = subset(combine(tables, choice), test)
        for n in SIZES:
            for t, s in replay_per_prompt(held, built.paths[:n]):
                tokens[n] += t
                steps[n] += s
    return sum(tokens[n] / max(steps[n], 1) for n in SIZES) / len(SIZES)


def fit_head_temperatures(tables: list[CalibrationStats], grid: list[float]) -> HeadTemperatureFit:
    """``tables[j]``: the calibration's ranks with every head at ``grid[j]``. Needs stats of >= 4 prompts that
    generated tokens (two halves with two cross-validation folds each)."""
    if len(tables) != len(grid) or not tables:
        raise ValueError(f"{len(tables)} rank tables for {len(grid)} head temperatures")
    live = sum(1 for n in tables[0].new_tokens if n > 0)
    if live < MIN_PROMPTS:
        raise ValueError(f"fitting the head temperature needs >= {MIN_PROMPTS} calibration prompts that generated tokens, these have "
                         f"{live}; calibrate on more prompts or pass --head-temperature")
    held_out = {"one": _held_out(tables, _fit_one), "per_head": _held_out(tables, _fit_per_head)}
    per_head = held_out["per_head"] > held_out["one"] + 1e-9
    choice = (_fit_per_head if per_head else _fit_one)(tables)
    per_head = per_head and len(set(choice)) > 1  # a per-head fit that lands on one point for all is that point
    heads = tables[0].num_heads
    scores = {f"{tau:g}": _score(combine(tables, [j] * heads)) for j, tau in enumerate(grid)}
    scores["chosen"] = _score(combine(tables, choice))
    return HeadTemperatureFit([grid[j] for j in choice], per_head, list(grid), held_out, scores)
