"""Latency files read by their low quantile and by medians, and what the one tree choice does with each reading."""

import json

import pytest

from treeopt.choice import Serving, choose_tree
from treeopt.design import TreeRequest
from treeopt.stats import CalibrationStats
from treeopt.tuning import load_latency, load_latency_batches

# one head, always right: the 2-node tree makes 9 tokens in 5 steps (1.8 tokens/step), plain decoding 9 in 9
STATS = CalibrationStats(1, 1, [[[0]] * 9, [[0]] * 9], [9, 9])
AUTO = TreeRequest(None, folds=0)


def latency_file(tmp_path, rows, plain, with_p10=True):
    def row(nodes, median, p10):
        r = {"nodes": nodes, "median_ms": median}
        if with_p10:
            r["p10_ms"] = p10
        return r

    doc = {"format": "medusa-latency", "version": 1, "device": "cpu", "dtype": "float32",
           "plain_step": row(1, *plain), "verify": [row(n, m, p) for n, m, p in rows]}
    path = tmp_path / "latency.json"
    path.write_text(json.dumps(doc))
    return path


def test_the_size_follows_the_low_quantile_and_tokens_per_s_the_medians(tmp_path):
    """A slow phase hit the 2-node timings: by medians (20 ms) the tree loses to plain decoding (10 ms a token), by
    10th percentiles (12 ms) it wins. The tree is chosen (what the step itself costs), and its tokens/s is predicted
    from the medians: 18 tokens in 10 steps of 20 ms, 90 tok/s against plain decoding's 100 (not 150 by 10th
    percentiles, what build and demo used to print)."""
    path = latency_file(tmp_path, [(2, 20.0, 12.0)], (10.0, 10.0))
    lat = load_latency(path)
    assert lat.statistic == "p10_ms" and lat.step_ms == [12.0] and lat.typical().step_ms == [20.0]
    choice = choose_tree(STATS, AUTO, load_latency_batches(path))
    assert choice.paths == 1 and choice.chosen.choice_tokens_per_s == pytest.approx(150.0)
    assert choice.tokens_per_s == pytest.approx(90.0) and choice.plain_tokens_per_s == pytest.approx(100.0)
    meta = choice.spec.meta
    assert meta["predicted_tokens_per_s"] == pytest.approx(90.0) and meta["predicted_speedup"] == pytest.approx(0.9)
    assert (meta["chosen_by"], meta["predicted_by"], meta["batch_size"], meta["batching"]) == ("p10_ms", "median_ms", 1, "static")
    assert choice.spec.planned_tokens_per_s(1, "static") == pytest.approx(90.0)  # what bench and demo print beside the measurement
    assert "p10 ms" in choice.table() and "<- chosen" in choice.table()


def test_files_without_quantiles_are_read_by_medians_for_both(tmp_path):
    path = latency_file(tmp_path, [(2, 20.0, 0)], (10.0, 0), with_p10=False)
    lat = load_latency(path)
    assert lat.statistic == "median_ms" and lat.step_ms == [20.0]
    choice = choose_tree(STATS, AUTO, lat)
    assert choice.paths == 0 and choice.tokens_per_s == pytest.approx(100.0)


def test_a_fixed_budget_with_a_profile_gets_its_prediction_and_a_missing_batch_size_is_named(tmp_path):
    path = latency_file(tmp_path, [(2, 20.0, 12.0)], (10.0, 10.0))
    fixed = choose_tree(STATS, TreeRequest(1, folds=0), load_latency(path))
    assert fixed.paths == 1 and "budget_auto" not in fixed.spec.meta and fixed.tokens_per_s == pytest.approx(90.0)
    assert choose_tree(STATS, TreeRequest(1, folds=0)).rates == []  # no profile: no tokens/s
    with pytest.raises(ValueError, match=r"no batch size 4 \(profiled: 1\)"):
        choose_tree(STATS, AUTO, load_latency(path), Serving(4))
    with pytest.raises(ValueError, match="no batch size 4"):
        load_latency_batches(path, 4)
