import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from conftest import tiny_heads, tiny_model
from medusa_runtime.checkpoint import HeadsFormatError
from medusa_runtime.heads import load_heads
from medusa_runtime.layout import onednn_packing_available


@pytest.fixture
def model():
    return tiny_model("llama")


@pytest.mark.parametrize("shared", [True, False])
def test_save_load_round_trip(tmp_path, model, shared):
    heads = tiny_heads(model, num_heads=3, shared=shared)
    heads.save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["medusa_num_heads"] == 3 and config["medusa_num_layers"] == 1
    loaded = load_heads(tmp_path, model)
    assert loaded.num_heads == 3 and loaded.config.shared_lm_head == shared
    h = torch.randn(2, model.config.hidden_size)
    assert torch.allclose(loaded(h), heads(h))
    assert loaded(h).shape == (2, 3, model.config.vocab_size)


@pytest.mark.parametrize("shared", [True, False])
def test_root_conditioned_round_trip_and_errors(tmp_path, model, shared):
    heads = tiny_heads(model, num_heads=3, shared=shared, root=True)
    heads.save(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["medusa_root_conditioned"] is True
    loaded = load_heads(tmp_path, model)
    assert loaded.config.root_conditioned and loaded.num_heads == 3
    h, root = torch.randn(4, model.config.hidden_size), torch.tensor([5, 6, 7, 8])
    with torch.inference_mode():
        assert torch.allclose(loaded(h, root=root), heads(h, root=root), atol=1e-5)
        assert not torch.allclose(loaded(h, root=root), loaded(h, root=root.flip(0)))  # the root matters
        with pytest.raises(ValueError, match="need the root token"):
            loaded(h)
    config = json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(HeadsFormatError, match="medusa_root_conditioned"):
        load_heads(with_config(tmp_path, config, medusa_root_conditioned=False), model)
    with pytest.raises(HeadsFormatError, match=r"root\.\{i\}\.weight"):
        load_heads(without_weights(with_config(tmp_path, config), "root.2.weight"), model)


def test_fresh_root_conditioned_heads_are_medusa_heads(model):
    from medusa_runtime.heads import HeadsConfig, MedusaHeads

    plain = tiny_heads(model, num_heads=2)
    rooted = MedusaHeads(HeadsConfig(2, 1, model.config.hidden_size, model.config.vocab_size, True, root_conditioned=True))
    rooted.heads.load_state_dict(plain.heads.state_dict())
    rooted.attach_base(model)
    h = torch.randn(3, model.config.hidden_size)
    assert torch.equal(rooted(h, root=torch.tensor([1, 2, 3])), plain(h))  # zero projections: the root is ignored


def test_head_count_comes_from_the_keys_not_the_config(tmp_path, model):
    tiny_heads(model, num_heads=4).save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["medusa_num_heads"] = 2  # released configs are known to state the wrong count
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert load_heads(tmp_path, model).num_heads == 4


def test_pt_checkpoint_loads_weights_only(tmp_path, model):
    heads = tiny_heads(model, num_heads=2)
    saved = heads.heads.state_dict()
    torch.save(saved, tmp_path / "medusa_lm_head.pt")
    loaded = load_heads(tmp_path, model)
    assert loaded.num_heads == 2
    assert set(loaded.checkpoint_state()) == set(saved)
    assert all(torch.equal(loaded.checkpoint_state()[key], tensor) for key, tensor in saved.items())  # every weight, exactly
    h = torch.randn(3, model.config.hidden_size)
    assert torch.equal(loaded.candidates(h, 4), heads.candidates(h, 4))


def test_pickle_that_runs_code_is_refused(tmp_path, model):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"0.0.linear.weight": Evil()}, tmp_path / "medusa_lm_head.pt")
    with pytest.raises(HeadsFormatError, match="weights-only"):
        load_heads(tmp_path, model)


def with_config(folder, config: dict, **changes):
    """Rewrite a heads folder's config.json as ``config`` with ``changes``; returns the folder."""
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


def without_weights(folder, *keys: str):
    """Drop these tensors from a heads folder's safetensors file; returns the folder."""
    state = load_file(folder / "medusa_lm_head.safetensors")
    for key in keys:
        del state[key]
    save_file(state, folder / "medusa_lm_head.safetensors")
    return folder


def _mutate(tmp_path, model, change):
    tiny_heads(model, num_heads=2).save(tmp_path)
    state = load_file(str(tmp_path / "medusa_lm_head.safetensors"))
    change(state)
    save_file(state, str(tmp_path / "medusa_lm_head.safetensors"))


def test_missing_key_is_named(tmp_path, model):
    _mutate(tmp_path, model, lambda s: s.pop("1.0.linear.bias"))
    with pytest.raises(HeadsFormatError, match=r"medusa_lm_head.safetensors: missing key '1.0.linear.bias'"):
        load_heads(tmp_path, model)


def test_unexpected_key_is_named(tmp_path, model):
    _mutate(tmp_path, model, lambda s: s.update({"extra.weight": torch.zeros(1)}))
    with pytest.raises(HeadsFormatError, match="unexpected key 'extra.weight'"):
        load_heads(tmp_path, model)


def test_misshaped_tensor_is_named(tmp_path, model):
    _mutate(tmp_path, model, lambda s: s.update({"1.0.linear.bias": torch.zeros(5)}))
    with pytest.raises(HeadsFormatError, match=r"'1.0.linear.bias' has shape \(5,\)"):
        load_heads(tmp_path, model)


def test_heads_of_another_model_are_refused(tmp_path, model):
    tiny_heads(model, num_heads=2).save(tmp_path)
    other = tiny_model("llama")
    other.config.hidden_size = 48
    with pytest.raises(HeadsFormatError, match="hidden size 32 but the base model has 48"):
        load_heads(tmp_path, other)


def test_empty_folder_is_a_clear_error(tmp_path, model):
    with pytest.raises(HeadsFormatError, match="no medusa_lm_head"):
        load_heads(tmp_path, model)


@pytest.mark.parametrize("shared", [True, False])
def test_first_heads_only(model, shared):
    heads = tiny_heads(model, num_heads=3, shared=shared)
    h = torch.randn(2, model.config.hidden_size)
    assert torch.allclose(heads(h, 2), heads(h)[:, :2], atol=1e-5)  # other GEMM shapes: rounding only
    assert heads(h[0], 1).shape == (1, model.config.vocab_size)


def medusa_logits_by_hand(heads, model, h: torch.Tensor) -> torch.Tensor:
    """Upstream Medusa's maths from the raw weights: x = h + SiLU(W h + b) per ResBlock, then the head's own lm_head
    (v1) or the base one (v2). h [B, H] -> [B, K, V]."""
    out = []
    for i in range(heads.num_heads):
        state = {k.split(".", 1)[1]: v for k, v in heads.checkpoint_state().items() if k.split(".")[0] == str(i)}
        x = h
        for j in range(heads.config.num_layers):
            x = x + F.silu(x @ state[f"{j}.linear.weight"].T + state[f"{j}.linear.bias"])
        lm = state.get(f"{heads.config.num_layers}.weight", model.get_output_embeddings().weight)
        out.append(x @ lm.T)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("shared", [True, False])
def test_candidates_are_the_full_topk_without_a_draft_vocab(model, shared):
    heads = tiny_heads(model, num_heads=3, shared=shared)
    h = torch.randn(4, model.config.hidden_size)
    expected = medusa_logits_by_hand(heads, model, h)  # [4, 3, V]
    assert torch.allclose(heads(h), expected, atol=1e-5)
    assert torch.equal(heads.candidates(h, 5), expected.topk(5, dim=-1).indices)
    assert torch.equal(heads.candidates(h[:1], 3, num_heads=2), expected[:1, :2].topk(3, dim=-1).indices)


@pytest.mark.parametrize("shared", [True, False])
def test_draft_vocab_guesses_only_its_tokens_in_full_vocab_order(model, shared):
    heads = tiny_heads(model, num_heads=3, shared=shared)
    keep = torch.randperm(model.config.vocab_size, generator=torch.Generator().manual_seed(1))[:20]
    heads.set_draft_vocab(keep)
    h = torch.randn(6, model.config.hidden_size)
    got = heads.candidates(h, 4)  # [6, 3, 4]
    masked = torch.full((model.config.vocab_size,), float("-inf"))
    masked[keep] = 0.0
    expected = (heads(h) + masked).topk(4, dim=-1).indices  # the full logits, outside tokens excluded
    assert torch.equal(got, expected)
    assert torch.isin(got, keep).all()
    assert torch.allclose(heads.guess_logits(h), heads(h)[..., keep], atol=1e-5)  # column i is token keep[i]
    with pytest.raises(ValueError, match="draft vocabulary has 20 tokens"):
        heads.candidates(h, 21)
    with torch.no_grad():  # an in-place edit of the weights is seen, not hidden behind the gathered rows
        weight = model.get_output_embeddings().weight if shared else heads.heads[0][-1].weight
        weight.mul_(-1.0)
    assert torch.equal(heads.candidates(h, 4), (heads(h) + masked).topk(4, dim=-1).indices)
    with torch.no_grad():
        weight.mul_(-1.0)


def test_draft_vocab_round_trip_and_strict_errors(tmp_path, model):
    heads = tiny_heads(model, num_heads=2)
    heads.set_draft_vocab([5, 9, 7, 30], {"size": 4})
    heads.save(tmp_path)
    loaded = load_heads(tmp_path, model)
    assert loaded.draft_vocab.tolist() == [5, 9, 7, 30] and loaded.draft_vocab_meta == {"size": 4}
    h = torch.randn(3, model.config.hidden_size)
    assert torch.equal(loaded.candidates(h, 2), heads.candidates(h, 2))
    path = tmp_path / "draft_vocab.json"
    for tokens, message in (([5, 5], "twice"), ([5, model.config.vocab_size], "outside"), ([], "non-empty"), (["a"], "non-empty")):
        path.write_text(json.dumps({"format": "medusa-draft-vocab", "version": 1, "tokens": tokens}))
        with pytest.raises(HeadsFormatError, match=f"draft_vocab.json: field 'tokens'.*{message}"):
            load_heads(tmp_path, model)
    path.write_text(json.dumps({"format": "other", "version": 1, "tokens": [1]}))
    with pytest.raises(HeadsFormatError, match="draft_vocab.json: fields 'format' and 'version'"):
        load_heads(tmp_path, model)
    heads.set_draft_vocab(None)
    heads.save(tmp_path)  # heads without a draft vocabulary must not inherit a stale file
    assert not path.exists() and load_heads(tmp_path, model).draft_vocab is None


@pytest.mark.skipif(not onednn_packing_available(), reason="PyTorch built without oneDNN")
@pytest.mark.parametrize("shared", [True, False])
def test_loaded_heads_run_packed_and_guess_what_stock_maths_guesses(tmp_path, model, shared):
    heads = tiny_heads(model, num_heads=3, shared=shared)
    keep = torch.randperm(model.config.vocab_size, generator=torch.Generator().manual_seed(2))[:40]
    heads.set_draft_vocab(keep)
    heads.save(tmp_path)
    loaded = load_heads(tmp_path, model)
    assert all(block[0].linear._packed is not None for block in loaded.heads)
    if not shared:  # a v1 head's own lm_head stays unpacked: no second copy of a vocabulary-sized matrix
        assert all(type(block[-1]) is torch.nn.Linear for block in loaded.heads)
    h = torch.randn(5, model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    with torch.enable_grad():  # the reference: autograd on, so every linear takes stock F.linear
        lm_weights = [model.get_output_embeddings().weight] * 3 if shared else [block[-1].weight for block in heads.heads]
        stock = torch.stack([F.linear(block[: heads.config.num_layers](h), w[keep]) for block, w in zip(heads.heads, lm_weights)], dim=-2)
        expected = keep[stock.topk(4, dim=-1).indices]
    with torch.inference_mode():  # as the decoder calls them
        assert torch.equal(loaded.candidates(h, 4), expected)
        assert loaded._draft_head(lm_weights[0] if shared else loaded.heads[0][-1].weight)._packed is not None


@pytest.mark.parametrize("shared", [True, False])
def test_sequential_round_trip_and_errors(tmp_path, model, shared):
    heads = tiny_heads(model, num_heads=3, shared=shared, sequential=True)
    heads.save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["medusa_sequential"] is True and config["medusa_root_conditioned"] is True
    assert {k for k in load_file(tmp_path / "medusa_lm_head.safetensors") if k.startswith("path.")} == {
        "path.1.0.weight", "path.2.0.weight", "path.2.1.weight"}
    loaded = load_heads(tmp_path, model)
    assert loaded.config.kind == "sequential"
    h, root, path = torch.randn(4, model.config.hidden_size), torch.tensor([5, 6, 7, 8]), torch.tensor([[9, 10]] * 4)
    with torch.inference_mode():
        assert torch.allclose(loaded(h, root=root, path=path), heads(h, root=root, path=path), atol=1e-5)
        other = loaded(h, root=root, path=path.flip(-1))
        assert torch.allclose(other[:, 0], loaded(h, root=root, path=path)[:, 0])  # head 0 reads no draft token
        assert not torch.allclose(other[:, 1:], loaded(h, root=root, path=path)[:, 1:])  # later heads read their path
        with pytest.raises(ValueError, match="draft tokens before it"):
            loaded(h, root=root)
    with pytest.raises(HeadsFormatError, match="medusa_sequential"):
        load_heads(with_config(tmp_path, config, medusa_sequential=False), model)
    with pytest.raises(HeadsFormatError, match="'medusa_prefix_attention' must be an object"):
        load_heads(with_config(tmp_path, config, medusa_prefix_attention=True), model)
    with pytest.raises(HeadsFormatError, match=r"path\.2\.1\.weight"):
        load_heads(without_weights(with_config(tmp_path, config), "path.2.1.weight"), model)
    with pytest.raises(HeadsFormatError, match="need 'root"):
        load_heads(without_weights(tmp_path, "root.0.weight", "root.1.weight", "root.2.weight"), model)


def test_fresh_sequential_heads_are_their_root_conditioned_heads(model):
    from medusa_runtime.heads import HeadsConfig, MedusaHeads

    rooted = tiny_heads(model, num_heads=3, root=True)
    seq = MedusaHeads(HeadsConfig(3, 1, model.config.hidden_size, model.config.vocab_size, True, root_conditioned=True, sequential=True))
    seq.load_checkpoint_state({**rooted.checkpoint_state(), **{k: v for k, v in seq.checkpoint_state().items() if k.startswith("path.")}})
    seq.attach_base(model)
    h, root = torch.randn(3, model.config.hidden_size), torch.tensor([1, 2, 3])
    with torch.inference_mode():
        assert torch.equal(seq(h, root=root, path=torch.tensor([[4, 5]] * 3)), rooted(h, root=root))  # zero path projections
    with pytest.raises(ValueError, match="root_conditioned=True"):
        HeadsConfig(3, 1, 8, 64, True, sequential=True)


@pytest.mark.parametrize("draft", [False, True])
def test_path_candidates_are_the_teacher_forced_candidates(model, draft):
    """What the runtime asks per depth equals what calibration asks along the true path."""
    heads = tiny_heads(model, num_heads=3, sequential=True)
    if draft:
        heads.set_draft_vocab(list(range(2, 64, 3)))
    h, root = torch.randn(2, model.config.hidden_size), torch.tensor([7, 11])
    paths = torch.tensor([[[3, 4], [5, 6], [3, 9]], [[8, 8], [1, 2], [60, 61]]])  # [B=2, P=3, 2]
    with torch.inference_mode():
        for i in range(3):
            per_depth = heads.path_candidates(i, h[:, None], root[:, None], paths[..., :i], 4)  # [2, 3, 4]
            for p in range(3):
                forced = heads.candidates(h, 4, root=root, path=paths[:, p])  # [2, 3 heads, 4]
                assert torch.equal(per_depth[:, p], forced[:, i])


def test_prefix_attention_round_trip_and_errors(tmp_path, model):
    heads = tiny_heads(model, num_heads=2, sequential=True, prefix=True)
    heads.save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["medusa_prefix_attention"] == {"num_attention_heads": 4, "intermediate_size": 48}
    assert {k for k in load_file(tmp_path / "medusa_lm_head.safetensors") if k.startswith("prefix.")} == {
        "prefix.norm1.weight", "prefix.qkv.weight", "prefix.out.weight", "prefix.norm2.weight", "prefix.up.weight", "prefix.down.weight"}
    loaded = load_heads(tmp_path, model)
    assert loaded.prefix is not None and loaded.config.prefix_attention == heads.config.prefix_attention
    x = torch.randn(2, 6, model.config.hidden_size)
    with torch.inference_mode():
        assert torch.allclose(loaded.read_context(x), heads.read_context(x), atol=1e-5)
        assert not torch.allclose(loaded.read_context(x), x)  # the heads read the layer's output, not h
    bad = {
        "must be an object": [1, 2],
        "unknown keys": {"num_attention_heads": 4, "intermediate_size": 48, "rope": True},
        "intermediate_size must be an integer": {"num_attention_heads": 4},
        "num_attention_heads >= 1": {"num_attention_heads": 0, "intermediate_size": 48},
        "does not divide the hidden size": {"num_attention_heads": 5, "intermediate_size": 48},
        r"key 'prefix\.(up|down)\.weight' has shape \((48, 32|32, 48)\), expected \((64, 32|32, 64)\)":
            {"num_attention_heads": 4, "intermediate_size": 64},
    }
    for message, field in bad.items():
        with pytest.raises(HeadsFormatError, match=message):
            load_heads(with_config(tmp_path, config, medusa_prefix_attention=field), model)
    without_field = {k: v for k, v in config.items() if k != "medusa_prefix_attention"}
    with pytest.raises(HeadsFormatError, match="prefix-attention weights .* no 'medusa_prefix_attention' field"):
        load_heads(with_config(tmp_path, without_field), model)
    with_config(tmp_path, config)
    with pytest.raises(HeadsFormatError, match="prefix-attention weights are missing"):
        load_heads(without_weights(tmp_path, *[k for k in load_file(tmp_path / "medusa_lm_head.safetensors") if k.startswith("prefix.")]), model)
    heads.save(tmp_path)
    with pytest.raises(HeadsFormatError, match=r"missing keys \['prefix.down.weight'\]"):
        load_heads(without_weights(tmp_path, "prefix.down.weight"), model)


def test_engine_view_runs_the_same_weights_as_an_engine_does():
    """The engine view ranks the whole vocabulary with the heads' own layers and reads no lookup and no prefix layer;
    the heads it came from keep all of theirs."""
    from dataclasses import replace

    import torch

    from medusa_runtime.heads import EngineError
    from medusa_runtime.lookup import ContextLookup

    model = tiny_model()
    heads = tiny_heads(model, lookup=ContextLookup(1, 3), prefix=True)
    heads.set_draft_vocab(list(range(0, 64, 2)))
    view = heads.engine_view("trtllm")
    assert view.draft_vocab is None and view.config.context_lookup is None and view.prefix is None
    assert heads.draft_vocab is not None and heads.config.context_lookup is not None and heads.prefix is not None
    assert list(view.parameters()) and all(a is b for a, b in zip(view.parameters(), heads.heads.parameters()))  # shared
    with pytest.raises(ValueError, match="the config differs in num_layers"):
        type(heads)(replace(view.config, num_layers=view.config.num_layers + 1), weights_of=heads)
    h = torch.randn(3, model.config.hidden_size)
    # an independent computation of what an engine ranks: each head's layers, then the base lm_head, over all tokens
    expected = torch.stack([model.get_output_embeddings()(head(h)) for head in heads.heads], dim=-2)  # [3, K, V]
    assert torch.allclose(view.guess_logits(h), expected, atol=1e-5)
    assert torch.equal(view.candidates(h, 5), expected.topk(5, dim=-1).indices)
    assert view.candidates(h, 5).max() > 1 and (view.candidates(h, 5) % 2 == 1).any()  # odd tokens: outside the draft vocabulary
    with pytest.raises(EngineError, match="sequential heads.*--kind plain"):
        tiny_heads(model, sequential=True).engine_view("medusa")
    with pytest.raises(EngineError, match="--engine 'sglang'"):
        heads.engine_view("sglang")
    # vLLM runs a draft vocabulary (its token_map): its view keeps it, and still drops the lookup and the prefix layer
    vllm = heads.engine_view("vllm")
    assert torch.equal(vllm.draft_vocab, heads.draft_vocab) and vllm.config.context_lookup is None and vllm.prefix is None
    assert torch.equal(vllm.candidates(h, 5), heads.draft_vocab[expected[..., heads.draft_vocab].topk(5, dim=-1).indices])
