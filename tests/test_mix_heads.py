"""treeopt mix-heads: two heads sets mixed weight by weight, through the CLI, and every refusal in one line."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from medusa_runtime.heads import load_heads
from treeopt.cli import app

runner = CliRunner()
WEIGHTS = "medusa_lm_head.safetensors"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def two_sets(tiny_folder, tmp_path):
    """The tiny heads with a draft vocabulary (A) and a copy whose every tensor moved (B): same architecture, different
    weights."""
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_folder / "heads", a)
    vocab = {"format": "medusa-draft-vocab", "version": 1, "tokens": list(range(4, 40)), "meta": {}}
    (a / "draft_vocab.json").write_text(json.dumps(vocab))
    shutil.copytree(a, b)
    gen = torch.Generator().manual_seed(0)
    state = {k: v + 0.1 * torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in load_file(b / WEIGHTS).items()}
    save_file(state, str(b / WEIGHTS))
    return a, b


def test_mix_is_the_weighted_sum_and_decodes_losslessly(tiny_folder, two_sets, tmp_path):
    a, b = two_sets
    state_a, state_b = load_file(a / WEIGHTS), load_file(b / WEIGHTS)
    for weight, expected in ((0, state_a), (1, state_b), (0.25, {k: 0.75 * v + 0.25 * state_b[k] for k, v in state_a.items()})):
        out = tmp_path / f"mix{weight}"
        r = invoke("mix-heads", a, b, "--weight", weight, "--out", out)
        assert r.exit_code == 0, r.output
        mixed = load_file(out / WEIGHTS)
        assert mixed.keys() == state_a.keys() and all(mixed[k].dtype == state_a[k].dtype for k in mixed)
        for k in mixed:
            torch.testing.assert_close(mixed[k], expected[k])
    out = tmp_path / "mix0.25"
    record = json.loads((out / "config.json").read_text())["treeopt_train"]
    assert "0.75 x" in record["data"] and isinstance(record["command"], str) and len(record["mixed_from"]) == 2
    assert load_heads(out).draft_vocab.tolist() == list(range(4, 40))
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({"format": "medusa-tree", "version": 1, "paths": [[0], [1], [0, 0]]}))
    r = invoke("bench", "--model", tiny_folder / "model", "--heads", out, "--tree", tree,
               "--prompts", tiny_folder / "prompts.jsonl", "--select", "0:2", "--max-new-tokens", 12)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["identical"] == 1.0


def test_mix_refuses_what_cannot_mix(two_sets, tmp_path):
    a, b = two_sets
    out = tmp_path / "mix"

    def refused(*args, says):
        r = invoke("mix-heads", *args)
        assert r.exit_code == 2 and says in r.output and len(r.output.strip().splitlines()) == 1, r.output

    refused(a, b, "--weight", 1.5, "--out", out, says="--weight 1.5")
    refused(a, b, "--weight", 0.5, "--out", a, says="is one of the sets being mixed")
    vocab = json.loads((b / "draft_vocab.json").read_text())
    config = json.loads((b / "config.json").read_text())
    (b / "config.json").write_text(json.dumps({**config, "medusa_context_lookup": {"min_match": 1, "max_match": 3}}))
    refused(a, b, "--weight", 0.5, "--out", out, says="['medusa_context_lookup'] differ")
    (b / "config.json").write_text(json.dumps(config))
    (b / "draft_vocab.json").write_text(json.dumps({**vocab, "tokens": vocab["tokens"][:-1]}))
    refused(a, b, "--weight", 0.5, "--out", out, says="another draft vocabulary")
    (b / "draft_vocab.json").write_text(json.dumps(vocab))
    state = load_file(b / WEIGHTS)
    name = sorted(state)[0]
    save_file({**state, name: state[name][..., :-1].contiguous()}, str(b / WEIGHTS))
    refused(a, b, "--weight", 0.5, "--out", out, says=f"tensor {name!r}")
    save_file(state, str(b / WEIGHTS))
    assert invoke("mix-heads", a, b, "--weight", 0.5, "--out", out).exit_code == 0
    refused(a, b, "--weight", 0.5, "--out", out, says="--overwrite")
    assert invoke("mix-heads", a, b, "--weight", 0.5, "--out", out, "--overwrite").exit_code == 0
