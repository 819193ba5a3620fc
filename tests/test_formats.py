"""Export formats: their exact text, round trips through import, option checks, and import of odd inputs.

What each consumer does with the exported text is tested in tests/test_consumers.py.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medusa_runtime.spec import TreeSpec, TreeSpecError
from treeopt.formats import (BUILD_TARGETS, DEFAULT_NAME, EXPORT_FORMATS, FORMATS, dense_topk_paths, export_tree,
                             import_tree, parse_tree_text, sibling_gaps)

SPEC = TreeSpec([(0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0)])


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_export_import_round_trip(fmt):
    assert parse_tree_text(export_tree(SPEC, fmt), "x").paths == SPEC.paths


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 9)), min_size=1, max_size=30),
       st.sampled_from(EXPORT_FORMATS))
def test_round_trip_of_random_trees(steps, fmt):
    """Every format reads back to the same paths in the same order (ranks < 10, first level gap-free)."""
    paths = []
    for pick, rank in steps:
        parents = [()] + paths
        child = parents[pick % len(parents)] + (rank,)
        if child not in paths:
            paths.append(child)
    first = {r: i for i, r in enumerate(sorted({p[0] for p in paths}))}
    spec = TreeSpec([(first[p[0]],) + p[1:] for p in paths])
    assert parse_tree_text(export_tree(spec, fmt), "x").paths == spec.paths


def test_known_forms():
    assert export_tree(SPEC, "medusa").splitlines()[1] == "treeopt_tree = [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]]"
    assert export_tree(SPEC, "medusa", name="mc_mine").splitlines()[1].startswith("mc_mine = [[0], [1]")
    assert export_tree(SPEC, "medusa-list") == "[[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]]\n"
    assert export_tree(SPEC, "trtllm") == export_tree(SPEC, "medusa-list")
    assert export_tree(SPEC, "trtllm-yaml").splitlines()[1:3] == ["- [0]", "- [1]"]
    assert export_tree(SPEC, "triton") == "{0}\\, {1}\\, {0\\, 0}\\, {0\\, 1}\\, {1\\, 0}\\, {0\\, 0\\, 0}\n"
    block = export_tree(SPEC, "triton-pbtxt")
    assert 'key: "medusa_choices"' in block and 'string_value: "{0}, {1}, {0, 0}, {0, 1}, {1, 0}, {0, 0, 0}"' in block


def test_llmapi_block():
    import yaml

    config = yaml.safe_load(export_tree(SPEC, "trtllm-llmapi"))["speculative_config"]
    assert config == {"decoding_type": "Medusa", "max_draft_len": 6, "num_medusa_heads": 3,
                      "medusa_choices": [list(p) for p in SPEC.paths]}


def test_every_export_ends_in_one_newline():
    for fmt in EXPORT_FORMATS:
        text = export_tree(SPEC, fmt)
        assert text.endswith("\n") and not text.endswith("\n\n"), fmt


def test_unknown_format_lists_the_formats():
    with pytest.raises(TreeSpecError, match="--format 'sglang': use one of medusa, medusa-list, trtllm"):
        export_tree(SPEC, "sglang")


def test_options_that_do_not_apply_are_refused():
    with pytest.raises(TreeSpecError, match="--max-draft-len applies to the TensorRT-LLM formats.*not to --format medusa"):
        export_tree(SPEC, "medusa", max_draft_len=10)
    with pytest.raises(TreeSpecError, match="--max-draft-len applies.*not to --format json"):
        export_tree(SPEC, "json", max_draft_len=10)
    with pytest.raises(TreeSpecError, match="--name applies to --format medusa only"):
        export_tree(SPEC, "trtllm", name="x")
    with pytest.raises(TreeSpecError, match="--name 'my tree': not a Python variable name"):
        export_tree(SPEC, "medusa", name="my tree")
    with pytest.raises(TreeSpecError, match="--name 'class'"):
        export_tree(SPEC, "medusa", name="class")
    with pytest.raises(TreeSpecError, match="--num-heads 0"):
        export_tree(SPEC, "trtllm", num_heads=0)
    with pytest.raises(TreeSpecError, match="--max-draft-len 0"):
        export_tree(SPEC, "trtllm", max_draft_len=0)


def test_orphans_and_duplicates_are_refused_before_any_engine_sees_them():
    for fmt in EXPORT_FORMATS:
        with pytest.raises(TreeSpecError, match=r"t.json: paths\[1\] = \[1, 0\] lacks its prefix \[1\]"):
            export_tree(TreeSpec([(0,), (1, 0)]), fmt, where="t.json")
        with pytest.raises(TreeSpecError, match="duplicate"):
            export_tree(TreeSpec([(0,), (0,)]), fmt)


def test_json_keeps_the_empty_tree():
    """The spec itself may be empty (plain decoding through the runtime); only engine formats refuse it."""
    assert parse_tree_text(export_tree(TreeSpec([]), "json"), "x").paths == []


def test_sibling_gaps():
    paths = [(0,), (2,), (0, 1), (2, 0)]
    assert sibling_gaps(paths, 1) == [((), [0, 2], 1)]
    assert sibling_gaps(paths, 2) == [((), [0, 2], 1), ((0,), [1], 0)]
    assert sibling_gaps(paths, 0) == []


def test_build_targets_keep_their_fields():
    """``treeopt build --for TARGET`` reads max_rank and gap_free_depth."""
    assert (BUILD_TARGETS["medusa"].max_rank, BUILD_TARGETS["medusa"].gap_free_depth) == (10, 0)
    assert (BUILD_TARGETS["trtllm"].max_rank, BUILD_TARGETS["trtllm"].gap_free_depth) == (16, 1)
    assert (BUILD_TARGETS["vllm"].max_rank, BUILD_TARGETS["vllm"].gap_free_depth) == (1, 0)  # a chain; export in vllm.py
    assert {f.target for f in FORMATS.values()} == {"medusa", "trtllm", None}
    assert DEFAULT_NAME.isidentifier()


# --------------------------------------------------------------------------- import
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


def test_triton_forms_read_back():
    assert parse_tree_text("{0}, {0, 0}, {1}", "x").paths == [(0,), (0, 0), (1,)]
    assert parse_tree_text("medusa_choices:{0}\\, {0\\, 0}", "x").paths == [(0,), (0, 0)]


def test_whole_config_pbtxt_reads_back():
    config = ('name: "tensorrt_llm"\nparameters: {\n  key: "decoding_mode"\n  value: {\n    string_value: "medusa"\n  }\n}\n'
              'parameters: {\n  key: "medusa_choices"\n    value: {\n      string_value: "{0}, {1}"\n  }\n}\n')
    assert parse_tree_text(config, "config.pbtxt").paths == [(0,), (1,)]


def test_unfilled_pbtxt_template_is_named():
    template = 'parameters: {\n  key: "medusa_choices"\n  value: {\n    string_value: "${medusa_choices}"\n  }\n}\n'
    with pytest.raises(TreeSpecError, match="config.pbtxt: the medusa_choices parameter is not filled in"):
        parse_tree_text(template, "config.pbtxt")


def test_bad_yaml_is_a_tree_error():
    with pytest.raises(TreeSpecError, match="t.yaml: not valid YAML"):
        parse_tree_text("- [0]\n- [0, 0\n", "t.yaml")
    with pytest.raises(TreeSpecError, match="speculative_config.decoding_type is 'Eagle'"):
        parse_tree_text("speculative_config:\n  decoding_type: Eagle\n  eagle_choices: [[0]]\n", "t.yaml")
    with pytest.raises(TreeSpecError, match="without a speculative_config block"):
        parse_tree_text("model: x\n", "t.yaml")


def test_import_tree_names_a_missing_file(tmp_path):
    with pytest.raises(TreeSpecError, match="missing.txt: no such tree file"):
        import_tree(tmp_path / "missing.txt")
    path = tmp_path / "t.yaml"
    path.write_text(export_tree(SPEC, "trtllm-yaml"))
    assert import_tree(path).meta["imported_from"] == str(path)


# --------------------------------------------------------------------------- treeopt export (CLI)
def invoke(*args):
    from typer.testing import CliRunner

    from treeopt.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def tree_file(tmp_path):
    path = tmp_path / "tree.json"
    SPEC.save(path)
    return path


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_cli_export_writes_what_import_reads(tree_file, tmp_path, fmt):
    out = tmp_path / "out" / f"tree.{fmt}"
    r = invoke("export", tree_file, "--format", fmt, "--out", out)
    assert r.exit_code == 0, r.output
    assert out.read_text() == export_tree(SPEC, fmt)
    back = tmp_path / "back.json"
    assert invoke("import", out, "--out", back).exit_code == 0
    assert import_tree(back).paths == SPEC.paths
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left


def test_cli_export_to_stdout_and_options(tree_file):
    r = invoke("export", tree_file, "--format", "medusa", "--name", "mc_mine")
    assert r.exit_code == 0 and r.output == export_tree(SPEC, "medusa", name="mc_mine")
    r = invoke("export", tree_file, "--format", "trtllm-llmapi", "--num-heads", 4, "--max-draft-len", 8)
    assert r.exit_code == 0 and "max_draft_len: 8\n" in r.output and "num_medusa_heads: 4\n" in r.output


def test_cli_export_help_lists_every_format():
    r = invoke("export", "--help")
    for fmt in EXPORT_FORMATS:
        assert fmt in r.output


@pytest.mark.parametrize("args, message", [
    (("--format", "trtllm", "--max-draft-len", 3), "6 paths, but max_draft_len is 3"),
    (("--format", "medusa", "--num-heads", 2), "has depth 3 but --num-heads is 2"),
    (("--format", "sglang"), "--format 'sglang': use one of"),
    (("--format", "vllm"), "pass --heads-dir DIR"),
    (("--format", "trtllm", "--heads-dir", "x"), "--heads-dir applies to --format vllm only"),
    (("--format", "json", "--name", "x"), "--name applies to --format medusa only"),
])
def test_cli_export_errors_leave_out_untouched(tree_file, tmp_path, args, message):
    fresh, existing = tmp_path / "fresh.txt", tmp_path / "existing.txt"
    existing.write_text("keep me\n")
    for out in (fresh, existing):
        r = invoke("export", tree_file, *args, "--out", out)
        assert r.exit_code == 2 and message in r.output
        assert r.output.startswith("error: ") and r.output.count("\n") == 1  # one line
    assert not fresh.exists() and existing.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.txt", "tree.json"]  # no temporary file left


@pytest.mark.parametrize("fmt", [f for f in EXPORT_FORMATS if FORMATS[f].target == "trtllm"])
def test_cli_export_names_the_releases_of_tensorrt_llm_formats_and_writes_the_file(tree_file, tmp_path, fmt):
    """TensorRT-LLM dropped the backend these formats are for: one line names the releases that run them."""
    r = invoke("export", tree_file, "--format", fmt, "--out", tmp_path / "x")
    notes = [line for line in r.output.splitlines() if line.startswith("note:")]
    assert r.exit_code == 0 and len(notes) == 1 and "TensorRT-LLM runs this format only in releases up to v1.3.0rc20" in notes[0]
    assert (tmp_path / "x").read_text() == export_tree(SPEC, fmt)
    r = invoke("export", tree_file, "--format", "medusa")
    assert "note:" not in r.output


def test_cli_export_refuses_the_empty_tree(tmp_path):
    empty = tmp_path / "empty.json"
    TreeSpec([]).save(empty)
    r = invoke("export", empty, "--format", "triton", "--out", tmp_path / "x.txt")
    assert r.exit_code == 2 and f"{empty}: the tree has no paths" in r.output and not (tmp_path / "x.txt").exists()


def test_cli_export_names_an_unwritable_out(tree_file, tmp_path):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    r = invoke("export", tree_file, "--format", "trtllm", "--out", folder)
    assert r.exit_code == 2 and f"{folder}: cannot be written" in r.output


def test_import_of_a_spec_keeps_its_meta(tmp_path):
    path = tmp_path / "t.json"
    TreeSpec(SPEC.paths, {"builder": "treeopt build"}).save(path)
    assert import_tree(path).meta == {"builder": "treeopt build"}
