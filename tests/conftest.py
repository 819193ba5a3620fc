"""Shared fixtures: tiny random models built from a config (no downloads), a tiny tokenizer, tiny heads."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast,
                          Qwen2Config, Qwen2ForCausalLM)

from medusa_runtime.heads import HeadsConfig, MedusaHeads
from medusa_runtime.prefix import PrefixConfig

# a measured linear-kernel table (medusa_runtime/layout.py) would go to a cache of this test session, not the user's;
# the tests run a fixed table that sends row counts to all three kernels (the lossless tests then cover each)
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="treeopt-tests-cache-")
from medusa_runtime.layout import KERNELS_ENV, mkl_packing_available  # noqa: E402

os.environ[KERNELS_ENV] = "1:stock,2-3:onednn,4-8:mkl" if mkl_packing_available() else "1:stock,2-8:onednn"
from medusa_runtime.lookup import ContextLookup
from medusa_runtime.models import LoadedModel

def pytest_sessionstart(session):
    """TREEOPT_TEST_DEVICE=cuda (scripts/gpu_check.sh) means the GPU tests must run: no CUDA is a failure, not a skip."""
    if os.environ.get("TREEOPT_TEST_DEVICE") == "cuda" and not torch.cuda.is_available():
        pytest.exit(f"TREEOPT_TEST_DEVICE=cuda but CUDA is not available (torch {torch.__version__}); install a CUDA build "
                    f"of torch (TORCH_SPEC) or unset TREEOPT_TEST_DEVICE", returncode=3)


VOCAB = 64
WORDS = ["<pad>", "<eos>", "<user>", "<bot>"] + [f"w{i}" for i in range(VOCAB - 4)]
CHAT_TEMPLATE = "{% for m in messages %}<user> {{ m['content'] }} {% endfor %}<bot>"


def tiny_config(arch: str = "llama", vocab: int = VOCAB):
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, eos_token_id=1, pad_token_id=0, bos_token_id=None)
    if arch == "llama":
        return LlamaConfig(**common), LlamaForCausalLM
    if arch == "qwen2":
        return Qwen2Config(**common, use_sliding_window=False), Qwen2ForCausalLM
    if arch == "mistral":
        return MistralConfig(**common, sliding_window=None), MistralForCausalLM
    raise ValueError(arch)


def tiny_model(arch: str = "llama", seed: int = 0, vocab: int = VOCAB):
    torch.manual_seed(seed)
    config, cls = tiny_config(arch, vocab)
    model = cls(config).eval()
    # sharpen the logits so that greedy decoding has no near-ties in fp32
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(4.0)
    model.requires_grad_(False)
    return model


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_heads(model, num_heads: int = 3, seed: int = 0, shared: bool = True, std: float = 0.5, root: bool = False,
               sequential: bool = False, lookup: ContextLookup | None = None, prefix: bool = False) -> MedusaHeads:
    """Random heads; ``root``: root-conditioned, with random (non-zero) root projections; ``sequential``: also
    random path projections (implies ``root``); ``lookup``: with that context lookup; ``prefix``: with a random
    (not identity) prefix-attention layer."""
    torch.manual_seed(seed)
    cfg = model.config
    heads = MedusaHeads(HeadsConfig(num_heads, 1, cfg.hidden_size, cfg.vocab_size, shared, base_model="tiny",
                                    root_conditioned=root or sequential, sequential=sequential, context_lookup=lookup,
                                    prefix_attention=PrefixConfig(4, 48) if prefix else None))
    heads.init_from_base(model.get_output_embeddings())
    heads.attach_base(model)
    with torch.no_grad():
        for head in heads.heads:
            torch.nn.init.normal_(head[0].linear.weight, std=std)
        for proj in heads.root_proj or ():
            torch.nn.init.normal_(proj.weight, std=std)
        for projs in heads.path_proj or ():
            for proj in projs:
                torch.nn.init.normal_(proj.weight, std=std)
        if heads.prefix is not None:
            for linear in (heads.prefix.qkv, heads.prefix.out, heads.prefix.up, heads.prefix.down):
                torch.nn.init.normal_(linear.weight, std=std / 5)  # a nudge: heads that read scrambled features guess nothing
    heads.eval().requires_grad_(False)
    return heads


def hf_greedy(model, prompt_ids: list[int], max_new_tokens: int, eos_token_ids: list[int]) -> list[int]:
    """One prompt's own greedy decode with ``generate`` (no padding): the reference the tests compare against."""
    from medusa_runtime.hf_decode import hf_generate

    return hf_generate(model, [prompt_ids], max_new_tokens, eos_token_ids)[0]


def loaded_tiny(model, tokenizer=None, eos=(1,)) -> LoadedModel:
    model.generation_config.eos_token_id = list(eos) or None
    return LoadedModel(model=model, tokenizer=tokenizer or tiny_tokenizer(), name="tiny", source="tiny",
                       device=torch.device("cpu"), dtype=torch.float32)


def trained_tiny_heads(model, num_heads: int = 3, work=None) -> MedusaHeads:
    """Heads trained for a few seconds on the tiny model's own greedy answers: good enough to give
    trees something to accept, so that calibration and build tests are not vacuous."""
    import random
    import tempfile

    from treeopt.distill import Trajectory
    from treeopt.train_heads import TrainConfig, compute_features, train_heads

    rng = random.Random(0)
    trajectories = []
    for _ in range(48):
        prompt = [rng.randrange(4, VOCAB) for _ in range(4)]
        trajectories.append(Trajectory(prompt, hf_greedy(model, prompt, 32, [])))
    work = Path(work or tempfile.mkdtemp())
    loaded = loaded_tiny(model, eos=())
    features = compute_features(loaded, trajectories, num_heads, work / "features")
    heads = MedusaHeads(HeadsConfig(num_heads, 1, model.config.hidden_size, model.config.vocab_size, True, "tiny"))
    heads.init_from_base(model.get_output_embeddings())
    cfg = TrainConfig(num_heads=num_heads, epochs=25, batch_size=64, lr=1e-2)
    train_heads(heads, features, cfg, work / "state.pt", model.get_output_embeddings().weight, progress=False)
    return heads.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny Llama + tokenizer + heads saved as folders, for CLI tests."""
    root = tmp_path_factory.mktemp("tiny")
    model = tiny_model("llama", vocab=VOCAB)
    model.generation_config.eos_token_id = 1
    model.save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    trained_tiny_heads(model, work=root / "train").save(root / "heads")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"w{i} w{i + 3} w{i + 7}"}) + "\n" for i in range(4)))
    return root
