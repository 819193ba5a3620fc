import json

import pytest

from medusa_runtime.spec import TreeSpec, TreeSpecError, chain_tree, load_tree, validate_paths


def test_valid_tree_round_trip(tmp_path):
    spec = TreeSpec([(0,), (0, 0), (1,), (0, 1)], {"builder": "test"})
    spec.save(tmp_path / "t.json")
    loaded = load_tree(tmp_path / "t.json", num_heads=2)
    assert loaded.paths == spec.paths and loaded.meta == {"builder": "test"}
    assert loaded.nodes == 5 and loaded.depth == 2 and loaded.topk == 2


@pytest.mark.parametrize("paths, message", [
    ([[0], [1, 0]], "lacks its prefix [1]"),
    ([[0], [0]], "duplicate"),
    ([[0], [-1]], "negative rank"),
    ([[0], []], "empty"),
    ([[0], [0, 0], [0, 0, 0]], "depth 3 but the heads have only 2"),
    ([[0], ["a"]], "not a list of integer ranks"),
])
def test_validation_names_the_offending_path(paths, message):
    with pytest.raises(TreeSpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_paths(paths, num_heads=2)


def test_load_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "medusa-tree", "version": 2, "paths": []}))
    with pytest.raises(TreeSpecError, match="bad.json.*version"):
        load_tree(bad)
    bare = tmp_path / "bare.json"
    bare.write_text("[[0], [1]]")
    with pytest.raises(TreeSpecError, match="treeopt import"):
        load_tree(bare)
    with pytest.raises(TreeSpecError, match="no such tree file"):
        load_tree(tmp_path / "missing.json")


def test_chain_and_prefix():
    spec = chain_tree(3)
    assert spec.paths == [(0,), (0, 0), (0, 0, 0)]
    assert spec.prefix(2).paths == [(0,), (0, 0)]


def test_paths_given_as_lists_become_tuples():
    spec = TreeSpec([[0], [0, 1]])
    assert spec.paths == [(0,), (0, 1)] and spec.depth == 2 and spec.topk == 2


def test_a_static_bench_never_reads_a_prediction_made_for_in_flight_batching():
    """A plan's tokens/s belongs to its batch size and its batching mode; bench (static) reads it through the same
    rule as bench --batching continuous, so a tree planned for in-flight batching shows no static prediction."""
    from conftest import loaded_tiny, tiny_model
    from medusa_runtime.bench import run_bench

    continuous = TreeSpec([], {"predicted_tokens_per_s": 50.0, "batch_size": 1, "batching": "continuous"})
    assert continuous.planned_tokens_per_s(1, "static") is None and continuous.planned_tokens_per_s(1, "continuous") == 50.0
    assert continuous.planned_tokens_per_s(2, "continuous") is None
    assert TreeSpec([], {"predicted_tokens_per_s": 40.0, "batch_size": 1}).planned_tokens_per_s(1, "static") == 40.0  # older plans
    loaded = loaded_tiny(tiny_model("llama"))
    report = run_bench(loaded, None, continuous, [[4, 5, 6]], 4, progress=False, warmup=False)
    assert report.predicted_tokens_per_s is None
    static = TreeSpec([], {**continuous.meta, "batching": "static"})
    assert run_bench(loaded, None, static, [[4, 5, 6]], 4, progress=False, warmup=False).predicted_tokens_per_s == 50.0
