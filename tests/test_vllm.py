"""treeopt/vllm.py: which heads it refuses and why, the folder it writes, and the speculative_config's checks.

What vLLM does with the files is re-implemented in tests/test_consumers.py."""

import json

import pytest
import torch

from conftest import tiny_heads, tiny_model
from medusa_runtime.heads import EngineError
from medusa_runtime.lookup import ContextLookup
from medusa_runtime.spec import TreeSpec, TreeSpecError
from treeopt.vllm import (CONFIG_FILE, WEIGHTS_FILE, export_text, read_vllm_heads_folder, speculative_config,
                          vllm_checkpoint, write_vllm_checkpoint)

MODEL = tiny_model()


@pytest.mark.parametrize("heads, message", [
    (lambda: tiny_heads(MODEL, sequential=True), "sequential heads.*--kind plain"),
    (lambda: tiny_heads(MODEL, root=True), "root-conditioned heads"),
    (lambda: tiny_heads(MODEL, lookup=ContextLookup(1, 3)), "context lookup.*--no-context-lookup"),
    (lambda: tiny_heads(MODEL, prefix=True), "prefix-attention layer"),
])
def test_heads_vllm_cannot_run_are_refused_in_one_line(heads, message):
    with pytest.raises(EngineError, match=message) as err:
        vllm_checkpoint(heads(), MODEL.get_output_embeddings().weight, "h/")
    assert str(err.value).startswith("h/: ") and "\n" not in str(err.value)


def test_config_fields_and_weight_names():
    heads = tiny_heads(MODEL, num_heads=2)
    heads.set_draft_vocab([5, 3, 9])
    ckpt = vllm_checkpoint(heads, MODEL.get_output_embeddings().weight, "h")
    assert {k: ckpt.config[k] for k in ("model_type", "num_heads", "num_hidden_layers", "vocab_size", "truncated_vocab_size",
                                        "medusa_fc_bias", "original_lm_head")} == {
        "model_type": "medusa", "num_heads": 2, "num_hidden_layers": 1, "vocab_size": 64, "truncated_vocab_size": 3,
        "medusa_fc_bias": True, "original_lm_head": True}
    # no other top-level key that vLLM's MedusaConfig would rename to num_heads or num_hidden_layers
    assert [k for k in ckpt.config if "num" in k] == ["num_heads", "num_hidden_layers"]
    assert sorted(ckpt.tensors) == ["blocks.0.layers.0.bias", "blocks.0.layers.0.weight", "blocks.1.layers.0.bias",
                                    "blocks.1.layers.0.weight", "lm_head.weight", "token_map"]
    assert ckpt.tensors["token_map"].tolist() == [5, 3, 9] and ckpt.tensors["token_map"].dtype == torch.int64
    assert torch.equal(ckpt.tensors["lm_head.weight"], MODEL.get_output_embeddings().weight[[5, 3, 9]])
    with pytest.raises(EngineError, match="share the base model's lm_head"):
        vllm_checkpoint(heads, None, "h")


def test_the_folder_holds_the_two_files_and_refuses_other_weight_files(tmp_path):
    ckpt = vllm_checkpoint(tiny_heads(MODEL, num_heads=2), MODEL.get_output_embeddings().weight, "h")
    write_vllm_checkpoint(ckpt, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert json.loads((tmp_path / "out" / CONFIG_FILE).read_text())["num_heads"] == 2
    write_vllm_checkpoint(ckpt, tmp_path / "out")  # again: its own files are replaced
    (tmp_path / "out" / "medusa_lm_head.safetensors").write_bytes(b"x")
    with pytest.raises(EngineError, match="holds medusa_lm_head.safetensors; vLLM loads every weight file"):
        write_vllm_checkpoint(ckpt, tmp_path / "out")


@pytest.fixture
def folder(tmp_path):
    write_vllm_checkpoint(vllm_checkpoint(tiny_heads(MODEL, num_heads=3), MODEL.get_output_embeddings().weight, "h"), tmp_path)
    return read_vllm_heads_folder(tmp_path)


def test_speculative_config_is_the_chain_s_depth(folder):
    config = speculative_config(TreeSpec([(0,), (0, 0)]), folder, "t.json")
    assert config == {"method": "medusa", "model": str(folder.path.resolve()), "num_speculative_tokens": 2}


@pytest.mark.parametrize("paths, message", [
    ([], "no paths, which for vLLM is speculation off: run vLLM without a speculative_config"),
    ([(0,), (1,)], r"paths\[1\] = \[1\] uses rank 1.*ranks < 1.*--for vllm"),
    ([(0,), (0, 1)], r"paths\[1\] = \[0, 1\] uses rank 1"),
    ([(0,) * d for d in range(1, 5)], "depth 4 needs 4 heads but .* has 3; vLLM would run the missing heads unloaded.*--max-depth 3"),
])
def test_trees_vllm_does_not_run_are_refused(folder, paths, message):
    with pytest.raises(TreeSpecError, match=message):
        speculative_config(TreeSpec(paths), folder, "t.json")


def test_heads_folder_errors_name_the_fix(tmp_path):
    with pytest.raises(TreeSpecError, match=f"no {WEIGHTS_FILE}.*export-heads HEADS --format vllm"):
        read_vllm_heads_folder(tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"")
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(TreeSpecError, match="field 'model_type' is 'llama', not 'medusa'"):
        read_vllm_heads_folder(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"model_type": "medusa", "num_heads": 2, "medusa_num_heads": 3}))
    with pytest.raises(TreeSpecError, match="'num_heads' must be one positive integer"):
        read_vllm_heads_folder(tmp_path)


def test_export_text_options(folder):
    chain = TreeSpec([(0,)])
    assert json.loads(export_text(chain, "vllm", folder.path, "t"))["num_speculative_tokens"] == 1
    assert export_text(chain, "trtllm", None, "t") == "[[0]]\n"
    with pytest.raises(TreeSpecError, match="--heads-dir applies to --format vllm only"):
        export_text(chain, "trtllm", folder.path, "t")
    with pytest.raises(TreeSpecError, match="--num-heads, --max-draft-len does not apply to --format vllm"):
        export_text(chain, "vllm", folder.path, "t", num_heads=2, max_draft_len=3, name=None)
    with pytest.raises(TreeSpecError, match="pass --heads-dir DIR"):
        export_text(chain, "vllm", None, "t")
