"""Cross-validation over prompts: honest predictions and the shrinkage strength. Pure Python.

A tree chosen on a sample and scored on the same sample is scored optimistically (selection bias): the
paths that made it into the tree are partly the ones the sample happened to favour. Here the calibration
prompts are split into K folds (prompt i goes to fold i % K); for each fold the tree is built on the other
K-1 folds and replayed on the held-out one, and the held-out (tokens, steps) of every fold are pooled:
tokens/step = total tokens / total steps, as ``bench`` counts them. The same loop picks the shrinkage
strength of the ``shrunk`` objective: the strength with the best held-out tokens/step at each tree size.
Picking the best of several strengths on the same folds is itself slightly optimistic (no nested
cross-validation): ``strength_spread`` (best minus worst strength) bounds that optimism, and on the
shipped heads' MT-Bench stats it is 0.000-0.005 tokens/step up to 256 nodes.

What it does not do: it cannot see a difference between the calibration prompts and the prompts a user
sends. ``interval`` says how much a tokens/step figure moves from one set of prompts to another (a
bootstrap over prompts), which is the scale any prediction should be read at.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .builder import BuildError, build_tree
from .stats import CalibrationStats, replay_per_prompt, subset

DEFAULT_FOLDS = 5
STRENGTHS = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)  # shrinkage strengths tried for ``shrunk``


class CrossValidationError(BuildError):
    pass


@dataclass
class FoldedCurve:
    """Held-out (tokens, steps) per tree size for one objective and strength, pooled over the folds."""

    strength: float
    per_prompt: dict[int, list[tuple[int, int]]]  # n paths -> held-out (tokens, steps) of every prompt

    def tokens_per_step(self, n: int) -> float:
        tokens = sum(t for t, _ in self.per_prompt[n])
        steps = sum(s for _, s in self.per_prompt[n])
        return tokens / max(steps, 1)


@dataclass
class CrossValidation:
    """The cross-validated curve: for each size, the best strength and its held-out tokens/step."""

    objective: str
    folds: int
    curves: list[FoldedCurve]  # one per strength tried (one in all for ``empirical``/``independent``)
    prompt_order: list[int] = field(default_factory=list)  # the prompt (rollout index) behind each entry of a per_prompt list

    def best(self, n: int) -> FoldedCurve:
        """The strength with the most held-out tokens/step at n paths (ties: the weaker shrinkage)."""
        return max(self.curves, key=lambda c: (round(c.tokens_per_step(n), 12), -c.strength))

    def strength(self, n: int) -> float:
        return self.best(n).strength

    def tokens_per_step(self, n: int) -> float:
        return self.best(n).tokens_per_step(n)

    def strength_spread(self, n: int) -> float:
        """Best minus worst strength's held-out tokens/step at n paths: a bound on the optimism of picking one."""
        values = [c.tokens_per_step(n) for c in self.curves]
        return max(values) - min(values)

    def interval(self, n: int, level: float = 0.9, resamples: int = 1000) -> tuple[float, float]:
        """Bootstrap interval over prompts of the held-out tokens/step at n paths (fixed seed)."""
        return bootstrap_interval(self.best(n).per_prompt[n], level, resamples)


def prompt_folds(stats: CalibrationStats, folds: int) -> list[list[int]]:
    """The j-th prompt that generated tokens goes to fold j % folds: deterministic, every fold spans the
    whole prompt list, and no fold is left with only empty prompts. Prompts that generated nothing are
    left out (they add no tokens and no steps anywhere)."""
    live = [i for i, n in enumerate(stats.new_tokens) if n > 0]
    return [live[f::folds] for f in range(folds)]


def live_prompts(stats: CalibrationStats) -> int:
    """Prompts that generated tokens (the only ones a fold can learn from or be scored on)."""
    return sum(1 for n in stats.new_tokens if n > 0)


def usable_folds(stats: CalibrationStats, folds: int) -> int:
    """``folds`` capped by the number of prompts that generated tokens; at least 2 of each are needed."""
    if folds < 2:
        raise CrossValidationError(f"--folds {folds}: use 0 (no cross-validation) or >= 2")
    prompts = live_prompts(stats)
    if prompts < 2:
        raise CrossValidationError(f"cross-validation needs stats from >= 2 prompts, these have {prompts}; "
                                   f"calibrate on more prompts or use --folds 0")
    return min(folds, prompts)


def cross_validate(stats: CalibrationStats, sizes: list[int], objective: str, folds: int = DEFAULT_FOLDS,
                   max_depth: int | None = None, max_children: int | None = None, gap_free_depth: int = 0,
                   strengths: tuple[float, ...] | None = None) -> CrossValidation:
    """Build on K-1 folds, replay on the held-out fold, for every size in ``sizes`` and every strength.

    One build per (strength, fold) at the largest size: a built tree's first n paths are its best n-path
    tree, so every size is a prefix of the same build."""
    folds = usable_folds(stats, folds)
    if strengths is None:
        strengths = STRENGTHS if objective == "shrunk" else (0.0,)
    split = prompt_folds(stats, folds)
    largest = max(sizes)
    curves = []
    for strength in strengths:
        per_prompt: dict[int, list[tuple[int, int]]] = {n: [] for n in sizes}
        for fold, held_out in enumerate(split):
            train = subset(stats, [i for f, part in enumerate(split) if f != fold for i in part])
            built = build_tree(train, largest, objective, max_depth, max_children, strict=False,
                               strength=strength, gap_free_depth=gap_free_depth)
            test = subset(stats, held_out)
            for n in sizes:
                per_prompt[n] += replay_per_prompt(test, built.paths[:n])
        curves.append(FoldedCurve(strength, per_prompt))
    return CrossValidation(objective, folds, curves, [i for part in split for i in part])


def bootstrap_interval(per_prompt: list[tuple[int, int]], level: float = 0.9, resamples: int = 1000,
                       seed: int = 0) -> tuple[float, float]:
    """Central ``level`` interval of total tokens / total steps over prompt sets resampled with replacement."""
    live = [(t, s) for t, s in per_prompt if s > 0]
    if not live:
        return (0.0, 0.0)
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        draw = [live[rng.randrange(len(live))] for _ in live]
        values.append(sum(t for t, _ in draw) / sum(s for _, s in draw))
    values.sort()
    tail = (1.0 - level) / 2
    return values[int(tail * (resamples - 1))], values[int((1 - tail) * (resamples - 1))]
