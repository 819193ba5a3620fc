"""Fitting the coupled drafts' head temperature from rank tables: the best grid point, per head when held-out says so."""

import random

import pytest

from treeopt.head_temperature import combine, fit_head_temperatures
from treeopt.stats import CalibrationStats


def table(hit: list[float], prompts: int = 12, positions: int = 40, seed: int = 0) -> CalibrationStats:
    """Rank rows where head k's guess is right (rank 0) with probability hit[k] at each position, else a miss."""
    rng = random.Random(seed)
    rollouts = [[[0 if rng.random() < p else -1 for p in hit] for _ in range(positions)] for _ in range(prompts)]
    return CalibrationStats(len(hit), 2, rollouts, [positions] * prompts)


def test_combine_takes_each_heads_column_from_its_table():
    a, b = table([0.9, 0.9], seed=1), table([0.1, 0.1], seed=2)
    mixed = combine([a, b], [1, 0])
    assert all(row == [rb[0], ra[1]] for ra_rows, rb_rows, rows in zip(a.rollouts, b.rollouts, mixed.rollouts)
               for ra, rb, row in zip(ra_rows, rb_rows, rows))


def test_the_grid_point_with_the_most_accepted_tokens_is_chosen_for_all_heads():
    tables = [table([p, p, p], seed=j) for j, p in enumerate([0.2, 0.6, 0.4])]  # grid point 1 is best for every head
    fit = fit_head_temperatures(tables, [0.5, 0.7, 1.0])
    assert fit.temperatures == [0.7, 0.7, 0.7]
    assert fit.scores["0.7"] > fit.scores["0.5"] and fit.scores["0.7"] > fit.scores["1"]


def test_per_head_temperatures_are_kept_when_held_out_prompts_favour_them():
    # head 1 is best at grid point 0, head 2 at grid point 2: no single point serves both
    tables = [table([0.8, 0.1], seed=10), table([0.5, 0.5], seed=11), table([0.1, 0.8], seed=12)]
    fit = fit_head_temperatures(tables, [0.6, 0.8, 1.0])
    assert fit.per_head and fit.temperatures == [0.6, 1.0]
    assert fit.held_out["per_head"] > fit.held_out["one"]


def test_too_few_prompts_to_fit_is_a_clear_error():
    with pytest.raises(ValueError, match="needs >= 4 calibration prompts"):
        fit_head_temperatures([table([0.5], prompts=3)], [1.0])
