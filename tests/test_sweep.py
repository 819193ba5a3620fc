"""sweep.py: the trees a sweep decodes at each batch size (planned, neighbours, plain) and the measuring loop's
token-for-token check, on a tiny model."""

import pytest

from cases import HEADS, MODELS
from conftest import loaded_tiny
from medusa_runtime.hf_decode import hf_references
from medusa_runtime.sampling import SamplingConfig
from medusa_runtime.spec import TreeSpec
from treeopt.stats import CalibrationStats
from treeopt.sweep import SweepTrees, paired_ratio, run_sweep, sweep_summary, sweep_trees
from treeopt.tuning import LatencyProfile


def profile(batch: int, plain: float, step: float, slope: float = 1.0) -> LatencyProfile:
    sizes = [2, 3, 4, 5]
    return LatencyProfile("cpu", "float32", sizes, [step + slope * n for n in sizes], plain, {}, batch_size=batch)


@pytest.mark.parametrize("batching", ["static", "continuous"])
def test_every_tree_is_checked_and_a_tree_listed_twice_is_decoded_once(batching):
    model = MODELS["llama"]
    loaded = loaded_tiny(model, eos=())
    prompts = [[4, 5, 6], [7, 8], [9, 10, 11, 12], [13]]
    references = hf_references(model, prompts, 8, [], SamplingConfig(), progress=False)
    tree = TreeSpec([(0,), (1,), (0, 0)])
    trees = {"empty": TreeSpec([]), "budget 3": tree, "auto (3)": tree}
    rows = run_sweep(loaded, HEADS["llama"], trees, prompts, 8, progress=False, batch_size=3, batching=batching,
                     references=references, predicted_tokens_per_s={"empty": 10.0, "budget 3": 12.0, "auto (3)": 12.0})
    assert [r.identical for r in rows] == [1.0, 1.0, 1.0]
    assert rows[2].measured_as == "budget 3" and rows[2].tokens_per_s == rows[1].tokens_per_s and rows[1].measured_as is None
    summary = sweep_summary(SweepTrees(3, trees, {}, "auto (3)"), rows, batching)
    assert summary["auto_paths"] == 3 and summary["identical"] == 1.0
    assert list(summary["auto_vs"]) == ["empty"]  # not against itself
    assert len(rows[0].runs) == (1 if batching == "continuous" else 2)
    twice = run_sweep(loaded, HEADS["llama"], trees, prompts, 8, progress=False, batch_size=3, batching=batching,
                      references=references, rounds=2)
    assert len(twice[0].runs) == 2 * len(rows[0].runs) and twice[0].tokens_per_step == rows[0].tokens_per_step
    summary = sweep_summary(SweepTrees(3, trees, {}, "auto (3)"), twice, batching)
    assert summary["auto_vs"]["empty"]["low"] is not None  # two rounds: an interval
    wrong = [r[:-1] + [r[-1] + 1] for r in references]  # every reference's last token changed
    rows = run_sweep(loaded, HEADS["llama"], trees, prompts, 8, progress=False, batch_size=3, batching=batching, references=wrong)
    assert [r.identical for r in rows] == [0.0, 0.0, 0.0]


def test_paired_ratio_over_batches():
    mine, other = [[10, 1.0], [10, 1.0], [20, 1.0]], [[10, 2.0], [10, 2.0], [10, 1.0]]
    r = paired_ratio(mine, other)
    assert r["ratio"] == pytest.approx((40 / 3) / (30 / 5), abs=1e-4) and r["low"] <= r["ratio"] <= r["high"]
    assert paired_ratio([[10, 1.0]], [[5, 1.0]]) == {"ratio": 2.0, "low": None, "high": None}


def test_sweep_trees_add_the_planned_tree_s_neighbours_and_predict_for_the_queue():
    rows = [[0, 0], [1, 0], [0, 1], [2, 2], [0, 2], [1, 1], [2, 0], [0, 0], [1, 2]]  # two heads, ranks 0-2 right at times
    stats = CalibrationStats(2, 3, [rows, rows[::-1]], [9, 9], prompt_tokens=[5, 7])
    # batch 1: a verify step costs what a plain step does, so a tree beats plain decoding; batch 2: it costs 10x more
    latencies = {1: profile(1, 10.0, 10.0, slope=0.0), 2: profile(2, 10.0, 100.0)}
    one, two = sweep_trees(stats, latencies, [0], [1, 2], "continuous", queue=5)
    assert set(two.trees) == {"empty", "auto (0)", "budget 1"}  # plain decoding planned, and its one neighbour
    assert two.predicted_tokens_per_s["auto (0)"] == two.predicted_tokens_per_s["empty"] > two.predicted_tokens_per_s["budget 1"]
    paths = len(one.trees[one.auto_label].paths)
    assert paths > 0 and set(one.trees) == {"empty", f"auto ({paths})", f"budget {paths - 1}", f"budget {paths + 1}"}
    best = max(one.predicted_tokens_per_s.values())
    assert one.predicted_tokens_per_s[one.auto_label] == best > one.predicted_tokens_per_s["empty"]
    alone = sweep_trees(stats, latencies, [2], [1], "static", neighbours=False)[0]
    assert set(alone.trees) == {"empty", "budget 2", alone.auto_label}
