import pytest

from medusa_runtime.spec import TreeSpec, TreeSpecError
from treeopt.formats import EXPORT_FORMATS, dense_topk_paths, export_tree, parse_tree_text

SPEC = TreeSpec([(0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0)])


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_export_import_round_trip(fmt):
    assert parse_tree_text(export_tree(SPEC, fmt), "x").paths == SPEC.paths


def test_known_forms():
    assert export_tree(SPEC, "medusa").startswith("[[0], [1], [0, 0]")
    assert export_tree(SPEC, "triton").startswith("{0}, {1}, {0, 0}")
    assert export_tree(SPEC, "trtllm-yaml").splitlines()[:2] == ["- [0]", "- [1]"]


def test_python_tuples_and_assignment():
    text = "mc_sim_7b_63 = [(0,), (0, 0), (1,), (0, 1)]"
    assert parse_tree_text(text, "x").paths == [(0,), (0, 0), (1,), (0, 1)]


def test_dense_legacy_form():
    spec = parse_tree_text("[1, 3, 2]", "x")
    assert spec.paths == dense_topk_paths([1, 3, 2])
    assert len(spec.paths) == 1 + 3 + 6


def test_code_is_never_evaluated():
    with pytest.raises(TreeSpecError, match="literal"):
        parse_tree_text("__import__('os').system('echo pwned')", "evil.py")


def test_invalid_tree_is_rejected_with_the_path():
    with pytest.raises(TreeSpecError, match=r"lacks its prefix \[1\]"):
        parse_tree_text("[[0], [1, 0]]", "x")
