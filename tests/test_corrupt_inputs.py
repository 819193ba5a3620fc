"""Every reader refuses corrupt input cleanly (issue 17), through the CLI as a user meets it.

Each test corrupts one input of a command: byte cuts, empty files, binary garbage, text garbage, and
valid JSON with a field replaced by a value of another type or deleted. A command may still succeed
when the corruption left a valid file (a rank changed from 0 to 1); otherwise it must exit with code 2
and one ``error: ...`` line (from ``fail()``), never a traceback, and must leave its output file as it
was: byte-identical when it existed, absent when it did not. Corruptions that can never leave a valid
file (cuts, garbage, empty files) must also name the corrupt file in that line.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import tiny_heads, tiny_model, tiny_tokenizer
from medusa_runtime.spec import TreeSpec, load_tree
from treeopt.cli import app
from treeopt.stats import CalibrationStats

runner = CliRunner()
EXAMPLES = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PREVIOUS = b"the previous output, which a refused command must leave alone\n"


# --------------------------------------------------------------------------- corruptions
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 70) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=5,
)  # ints stay small: a valid tree with rank 10**20 is a runtime limit, not a corrupt file


def json_paths(value, prefix=()):
    """Every place in a parsed JSON document (the first elements of each list), the root included."""
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value[:2]) if isinstance(value, list) else ()
    for key, child in items:
        yield from json_paths(child, prefix + (key,))


@st.composite
def retyped(draw, doc):
    """The document with one value, anywhere in it, replaced by an arbitrary JSON value or deleted."""
    doc = copy.deepcopy(doc)
    path = draw(st.sampled_from(list(json_paths(doc))))
    if not path:
        return json.dumps(draw(JSON_VALUES)).encode()
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return json.dumps(doc).encode()


def cuts(data: bytes):
    """Strict prefixes of a file's content (trailing whitespace aside): the file as an interrupted write leaves it."""
    body = data.rstrip()
    return st.integers(0, len(body) - 1).map(lambda k: body[:k])


def overwritten(data: bytes):
    """A few bytes of the file replaced by random ones (a bad disk, a bad copy): may or may not stay valid."""
    return st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1, max_size=4).map(
        lambda changes: bytes(b if i not in dict(changes) else dict(changes)[i] for i, b in enumerate(data)))


BINARY = st.binary(max_size=200).map(lambda b: b"\x93\xff" + b)  # never UTF-8 text, never a file we wrote
TEXT = st.text(max_size=60).map(str.encode)


def json_corruptions(data: bytes):
    """(content, must_fail) for a JSON file: cuts, empty, binary and text garbage must fail; retyped fields may not."""
    return st.one_of(
        cuts(data).map(lambda b: (b, True)),
        BINARY.map(lambda b: (b, True)),
        TEXT.map(lambda b: (b, True)),
        retyped(json.loads(data)).map(lambda b: (b, False)),
        overwritten(data).map(lambda b: (b, False)),
    )


def binary_corruptions(data: bytes):
    """(content, must_fail) for a weights file: cuts, garbage and empty files must fail; overwritten bytes may not."""
    return st.one_of(
        cuts(data).map(lambda b: (b, True)),
        BINARY.map(lambda b: (b, True)),
        overwritten(data).map(lambda b: (b, False)),
    )


# --------------------------------------------------------------------------- checks
def run(args, bad: Path, content: bytes, must_fail: bool, out: Path | None = None, out_exists: bool = True, names: Path | None = None):
    """Write ``content`` to ``bad``, run the command, and check it either succeeded or refused cleanly."""
    bad.write_bytes(content)
    if out is not None:
        if out_exists:
            out.write_bytes(PREVIOUS)
        elif out.exists():
            out.unlink()
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception} on {content[:120]!r}")
    if result.exit_code == 0 and not must_fail:
        return result
    assert result.exit_code == 2, f"exit {result.exit_code} on {content[:120]!r}: {result.output}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    if must_fail:
        assert str(names or bad) in errors[0], f"the error does not name {names or bad}: {errors[0]}"
    if out is not None:
        if out_exists:
            assert out.read_bytes() == PREVIOUS, f"{out} was overwritten by a refused command"
        else:
            assert not out.exists(), f"{out} was created by a refused command"
    return result


def refused(args, names: Path | str):
    """The command exits 2 with one error line naming ``names``."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert str(names) in errors[0], errors[0]
    return errors[0]


# --------------------------------------------------------------------------- fixtures: one valid file of each kind
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Like conftest's ``tiny_folder`` (model, tokenizer, heads, prompts.jsonl) with untrained heads: built in a
    second, so that this file runs alone in well under a minute. Corrupt inputs never reach the heads' guesses."""
    root = tmp_path_factory.mktemp("tiny-untrained")
    model = tiny_model("llama")
    model.generation_config.eos_token_id = 1
    model.save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    tiny_heads(model, num_heads=3).save(root / "heads")
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"w{i} w{i + 3} w{i + 7}"}) + "\n" for i in range(4)))
    return root


@pytest.fixture(scope="module")
def work(tmp_path_factory, folder):
    root = tmp_path_factory.mktemp("corrupt")
    rows = [[[0, 0], [1, -1], [0, 1], [2, 0], [0, -1]], [[0, 0], [0, 0], [1, 0], [0, -1], [-1, -1]]]
    CalibrationStats(2, 3, rows, [5, 5], {"model": "tiny"}).save(root / "stats.json")
    TreeSpec([(0,), (1,), (0, 0)], {"builder": "test"}).save(root / "tree.json")
    (root / "choices.txt").write_text("[[0], [1], [0, 0]]\n")
    row = lambda n, ms: {"nodes": n, "median_ms": ms * 1.1, "p10_ms": ms}  # noqa: E731
    latency = {"format": "medusa-latency", "version": 1, "device": "cpu", "dtype": "float32",
               "plain_step": row(1, 10.0), "verify": [row(2, 11.0), row(4, 12.0), row(8, 16.0)]}
    (root / "latency.json").write_text(json.dumps(latency))
    heads = root / "heads"
    shutil.copytree(folder / "heads", heads)
    (heads / "draft_vocab.json").write_text(json.dumps({"format": "medusa-draft-vocab", "version": 1, "tokens": list(range(4, 40))}))
    pt_heads = root / "pt-heads"
    pt_heads.mkdir()
    from safetensors.torch import load_file

    torch.save(load_file(heads / "medusa_lm_head.safetensors"), pt_heads / "medusa_lm_head.pt")
    shutil.copy(heads / "config.json", pt_heads / "config.json")
    return root


def model_args(folder, heads):
    return ["--model", folder / "model", "--heads", heads, "--prompts", folder / "prompts.jsonl",
            "--select", "0:1", "--max-new-tokens", 2]


def test_the_valid_files_are_accepted(work, folder):
    """The baseline every corruption starts from: each command succeeds on the uncorrupted files."""
    assert runner.invoke(app, ["build", str(work / "stats.json"), "--budget", "2", "--folds", "0", "--out", str(work / "b.json")]).exit_code == 0
    r = runner.invoke(app, ["build", str(work / "stats.json"), "--budget", "auto", "--latency", str(work / "latency.json"),
                            "--max-budget", "3", "--folds", "0", "--out", str(work / "b.json")])
    assert r.exit_code == 0, r.output
    for heads in ("heads", "pt-heads"):
        r = runner.invoke(app, ["bench", *map(str, model_args(folder, work / heads)), "--tree", str(work / "tree.json")])
        assert r.exit_code == 0, r.output


# --------------------------------------------------------------------------- tree specs, stats, latency, imports
@EXAMPLES
@given(case=st.data())
def test_corrupt_stats_are_refused_and_the_tree_is_not_overwritten(work, case):
    bad, out = work / "bad-stats.json", work / "existing.json"
    content, must_fail = case.draw(json_corruptions((work / "stats.json").read_bytes()))
    run(["build", bad, "--budget", 2, "--folds", 0, "--out", out], bad, content, must_fail, out)
    run(["evaluate", work / "tree.json", bad], bad, content, must_fail)


@pytest.mark.parametrize("field, value", [
    ("num_heads", "2"), ("num_heads", 0), ("num_heads", True), ("topk", 2.5), ("topk", -1),
    ("rollouts", "[[0, 1]]"), ("rollouts", [[0, 1]]), ("rollouts", [[[0, "1"]], [[0, 0]]]), ("rollouts", [[[0, 1.0]], [[0, 0]]]),
    ("rollouts", [[[0, 0, 0]], [[0, 0]]]), ("rollouts", [[[0, 3]], [[0, 0]]]), ("rollouts", [[[-2, 0]], [[0, 0]]]),
    ("rollouts", [[[True, 0]], [[0, 0]]]), ("rollouts", [None, []]), ("new_tokens", "5"), ("new_tokens", [5, -1]),
    ("new_tokens", [5.0, 5]), ("new_tokens", [5]), ("new_tokens", [5, 99]), ("provenance", [1]),
])
def test_stats_with_a_wrong_type_inside_are_refused(work, field, value):
    doc = json.loads((work / "stats.json").read_text())
    doc[field] = value
    bad, out = work / "typed-stats.json", work / "existing.json"
    run(["build", bad, "--budget", 1, "--folds", 0, "--out", out], bad, json.dumps(doc).encode(), True, out)


@EXAMPLES
@given(case=st.data())
def test_corrupt_latency_is_refused(work, case):
    bad, out = work / "bad-latency.json", work / "existing.json"
    content, must_fail = case.draw(json_corruptions((work / "latency.json").read_bytes()))
    run(["build", work / "stats.json", "--budget", "auto", "--latency", bad, "--max-budget", 3, "--folds", 0, "--out", out],
        bad, content, must_fail, out)


@pytest.mark.parametrize("change", [
    {"verify": "fast"}, {"verify": []}, {"verify": [1, 2]}, {"verify": [{"nodes": "2", "p10_ms": 1.0}]},
    {"verify": [{"nodes": 2, "p10_ms": 0}]}, {"verify": [{"nodes": 2, "p10_ms": float("nan")}]},
    {"verify": [{"nodes": 2, "p10_ms": 3.0}, {"nodes": 2, "p10_ms": 4.0}]}, {"plain_step": 5}, {"plain_step": {"p10_ms": -1}},
])
def test_latency_with_a_wrong_type_inside_is_refused(work, change):
    doc = {**json.loads((work / "latency.json").read_text()), **change}
    bad, out = work / "typed-latency.json", work / "existing.json"
    run(["build", work / "stats.json", "--budget", "auto", "--latency", bad, "--max-budget", 3, "--folds", 0, "--out", out],
        bad, json.dumps(doc).encode(), True, out)


@EXAMPLES
@given(case=st.data())
def test_corrupt_trees_are_refused_by_show_evaluate_and_import(work, case):
    source = case.draw(st.sampled_from(["tree.json", "choices.txt"]))
    bad, out = work / f"bad-{source}", work / "imported.json"
    data = (work / source).read_bytes()
    content, must_fail = case.draw(json_corruptions(data) if source.endswith(".json") else st.one_of(
        cuts(data).map(lambda b: (b, True)), BINARY.map(lambda b: (b, True)), TEXT.map(lambda b: (b, False)),
        overwritten(data).map(lambda b: (b, False))))
    run(["show", bad], bad, content, must_fail)
    run(["evaluate", bad, work / "stats.json"], bad, content, must_fail)
    run(["import", bad, "--out", out], bad, content, must_fail, out, out_exists=False)


@EXAMPLES
@given(case=st.data())
def test_corrupt_trees_are_refused_by_the_runtime(work, folder, case):
    bad, out = work / "bad-runtime-tree.json", work / "report.json"
    content, must_fail = case.draw(json_corruptions((work / "tree.json").read_bytes()))
    run(["bench", *model_args(folder, folder / "heads"), "--tree", bad, "--json", out], bad, content, must_fail, out)
    bad.write_bytes(content)
    try:  # the runtime's reader itself: a valid spec or a TreeSpecError, nothing else
        load_tree(bad, num_heads=3)
    except ValueError as err:
        assert type(err).__name__ == "TreeSpecError" and str(bad) in str(err) and "\n" not in str(err)


# Crashes of treeopt/formats.py (owned elsewhere, reported): import_tree keeps a non-object "meta", a set inside a
# literal list raises TypeError, and deeply nested spec JSON raises RecursionError. Remove the mark once fixed.
@pytest.mark.parametrize("content", [
    b'{"format": "medusa-tree", "version": 1, "paths": [[0]], "meta": [1]}',
    b"[{[0]}]",
    b'{"format": "medusa-tree", "version": 1, "paths": ' + b"[" * 100_000,
])
def test_trees_that_crash_the_import_parser_are_refused(work, content):
    bad = work / "crash-tree.txt"
    run(["show", bad], bad, content, True)
    run(["import", bad, "--out", work / "imported.json"], bad, content, True, work / "imported.json", out_exists=False)


# --------------------------------------------------------------------------- heads: config.json, weights, draft vocabulary
HEADS_FILES = [("heads", "config.json"), ("heads", "draft_vocab.json"), ("heads", "medusa_lm_head.safetensors"),
               ("pt-heads", "medusa_lm_head.pt")]


@pytest.mark.parametrize("kind, name", HEADS_FILES)
def test_corrupt_heads_files_are_refused(work, folder, kind, name):
    heads = work / f"bad-{kind}-{name}"
    shutil.copytree(work / kind, heads, dirs_exist_ok=True)
    original = (work / kind / name).read_bytes()
    strategy = json_corruptions(original) if name.endswith(".json") else binary_corruptions(original)
    out = work / "report.json"

    @settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(case=strategy)
    def check(case):
        content, must_fail = case
        run(["bench", *model_args(folder, heads), "--json", out], heads / name, content, must_fail, out)

    check()


@pytest.mark.parametrize("change", [
    {"medusa_num_heads": "3"}, {"medusa_num_layers": None}, {"medusa_num_heads": 0}, {"base_model_name_or_path": ["tiny"]},
    {"medusa_root_conditioned": "yes"},
])
def test_heads_config_with_a_wrong_type_is_refused(work, folder, change):
    heads = work / "typed-heads"
    shutil.copytree(work / "heads", heads, dirs_exist_ok=True)
    config = {**json.loads((work / "heads" / "config.json").read_text()), **change}
    run(["bench", *model_args(folder, heads)], heads / "config.json", json.dumps(config).encode(), True)


@pytest.mark.parametrize("state", [
    {"0.0.linear.weight": torch.zeros(4, 4), "0.0.linear.bias": torch.zeros(5)},  # shapes that disagree
    {"0.0.linear.weight": torch.zeros(()), "0.0.linear.bias": torch.zeros(1)},  # a scalar where a matrix belongs
    {"0.0.linear.weight": [1, 2], "0.0.linear.bias": torch.zeros(1)},  # not a tensor
    {"0.0.linear.weight": torch.zeros(2, 2, dtype=torch.long), "0.0.linear.bias": torch.zeros(2, dtype=torch.long)},
    {"0.0.linear.weight": torch.zeros(100_000, 1), "0.0.linear.bias": torch.zeros(100_000)},  # would size 40 GB heads
])
def test_pt_weights_of_the_wrong_kind_are_refused(work, folder, state):
    heads = work / "kind-heads"
    heads.mkdir(exist_ok=True)
    torch.save(state, heads / "medusa_lm_head.pt")
    refused(["bench", *model_args(folder, heads)], heads / "medusa_lm_head.pt")


# --------------------------------------------------------------------------- prompts
@EXAMPLES
@given(case=st.data())
def test_corrupt_prompt_files_are_refused(work, folder, case):
    data = (folder / "prompts.jsonl").read_bytes()
    bad, out = work / "bad-prompts.jsonl", work / "report.json"
    content, must_fail = case.draw(st.one_of(
        cuts(data).map(lambda b: (b, not _complete_jsonl(b))),
        BINARY.map(lambda b: (b, True)),
        TEXT.map(lambda b: (b, True)),
        retyped(json.loads(data.splitlines()[0])).map(lambda line: (line + b"\n" + data, False)),
    ))
    args = model_args(folder, folder / "heads")
    args[args.index("--prompts") + 1] = bad
    run(["bench", *args, "--json", out], bad, content, must_fail, out)


def _complete_jsonl(content: bytes) -> bool:
    """A cut at a line end leaves a valid, shorter prompt file."""
    lines = [line for line in content.decode().split("\n") if line.strip()]
    return bool(lines) and all(line.endswith("}") for line in lines)


# --------------------------------------------------------------------------- model paths
@pytest.mark.parametrize("name, corrupt", [
    ("config.json", lambda b: b[: len(b) // 2]), ("config.json", lambda b: b""), ("config.json", lambda b: b'{"model_type": 5}'),
    ("model.safetensors", lambda b: b[: len(b) // 3]), ("model.safetensors", lambda b: os.urandom(64)),
    ("tokenizer.json", lambda b: b[: len(b) // 2]), ("tokenizer.json", lambda b: b"\x93\xff\x00"), ("tokenizer.json", None),
])
def test_corrupt_model_folders_are_refused(work, folder, name, corrupt):
    model = work / "bad-model"
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(folder / "model", model)
    if corrupt is None:
        (model / name).unlink()
    else:
        (model / name).write_bytes(corrupt((model / name).read_bytes()))
    refused(["bench", "--model", model, "--heads", "none", "--prompts", folder / "prompts.jsonl"], model)


@pytest.mark.parametrize("path", ["/nonexistent/model", "./no-such-model-folder", "no/such/folder", "missing.gguf"])
def test_a_model_path_that_does_not_exist_is_named(path):
    error = refused(["bench", "--model", path, "--heads", "none"], path)
    assert "no such" in error and "hub" not in error.split(";")[0]


def test_a_model_path_that_is_a_file_is_refused(folder):
    refused(["bench", "--model", folder / "model" / "config.json", "--heads", "none"], folder / "model" / "config.json")


# --------------------------------------------------------------------------- optuna storage
@pytest.mark.parametrize("storage, named", [
    ("notascheme://x", "notascheme"), ("not a url", "not a url"), ("postgresql+nosuchdriver://u:secret@h/db", "h/db"),
    ("sqlite:////no/such/folder/study.db", "/no/such/folder"),
])
def test_bad_storage_urls_are_refused_before_the_model_loads(tmp_path, storage, named):
    out = tmp_path / "tree.json"
    error = refused(["tune", "--model", "/model/not/needed/yet", "--storage", storage, "--out", out], named)
    assert "secret" not in error and not out.exists()


def test_a_storage_file_that_is_not_a_database_is_refused(work, folder, tmp_path):
    db, out = tmp_path / "study.db", tmp_path / "tree.json"
    db.write_bytes(b"\x93\xff not a database" * 100)
    refused(["tune", *model_args(folder, folder / "heads"), "--stats", work / "stats.json", "--trials", 1,
             "--holdout", "", "--storage", f"sqlite:///{db}", "--out", out], db)
    assert not out.exists()


# --------------------------------------------------------------------------- atomic writes
def test_an_interrupted_tree_save_leaves_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "tree.json"
    out.write_bytes(PREVIOUS)

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        TreeSpec([(0,)]).save(out)
    assert out.read_bytes() == PREVIOUS and [p.name for p in tmp_path.iterdir()] == ["tree.json"]
    monkeypatch.undo()
    TreeSpec([(0,)]).save(out)
    assert load_tree(out).paths == [(0,)] and [p.name for p in tmp_path.iterdir()] == ["tree.json"]
