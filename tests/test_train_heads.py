import json

import pytest
import torch

from conftest import VOCAB, loaded_tiny, tiny_model
from conftest import hf_greedy
from medusa_runtime.heads import HeadsConfig, MedusaHeads, load_heads, true_path
from medusa_runtime.prefix import PrefixConfig
from treeopt.distill import Trajectory
from treeopt.train_heads import (TrainConfig, TrainError, base_hidden_states, check_output_folder, compute_features,
                                 head_accuracy, head_losses, read_training_rows, softmax_restriction, softmax_targets,
                                 teacher_logits, train_heads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    model = tiny_model("llama", seed=5)
    trajectories = [Trajectory([4 + i % 50, 7, 9 + i % 40], hf_greedy(model, [4 + i % 50, 7, 9 + i % 40], 24, [])) for i in range(30)]
    features = compute_features(loaded_tiny(model, eos=()), trajectories, 2, tmp_path_factory.mktemp("f"))
    return model, features


def fresh_heads(model):
    heads = MedusaHeads(HeadsConfig(2, 1, model.config.hidden_size, VOCAB, True))
    heads.init_from_base(model.get_output_embeddings())
    return heads


def test_targets_are_the_tokens_ahead(data):
    model, features = data
    # position 0 is the last prompt token: head 1 guesses new token 2, head 2 new token 3
    first = hf_greedy(model, [4, 7, 9], 24, [])
    assert features.targets[0].tolist() == [first[1], first[2]]
    assert features.targets[23].tolist() == [-1, -1]  # nothing that far ahead at the end


def test_training_lowers_loss_and_writes_a_loadable_checkpoint(data, tmp_path):
    model, features = data
    heads = fresh_heads(model)
    before = head_accuracy(heads, features.hidden, features.targets, features.roots)
    cfg = TrainConfig(num_heads=2, epochs=15, batch_size=64, lr=1e-2)
    train_heads(heads, features, cfg, tmp_path / "state.pt", model.get_output_embeddings().weight, progress=False)
    after = head_accuracy(heads, features.hidden, features.targets, features.roots)
    assert after["top1"][0] > before["top1"][0] + 0.1
    heads.save(tmp_path / "heads")
    loaded = load_heads(tmp_path / "heads", model)
    h = features.hidden[:5]
    assert torch.allclose(loaded(h), heads(h), atol=1e-6)


def test_base_hidden_states_of_chosen_layers(data):
    model, features = data
    sequences = [[4, 7, 9, 11, 3], [5, 7, 2], [6, 8, 10, 12, 14, 16, 18, 20, 22]]  # padded together, unequal lengths
    with torch.no_grad():
        last = base_hidden_states(model.base_model, sequences, "cpu")
        layers = base_hidden_states(model.base_model, sequences, "cpu", layers=[0, model.config.num_hidden_layers])
        alone = [model.base_model(input_ids=torch.tensor([ids])).last_hidden_state[0] for ids in sequences]
    for ids, h, stacked, one in zip(sequences, last, layers, alone):
        assert h.shape == (len(ids), model.config.hidden_size) and stacked.shape == (len(ids), 2, model.config.hidden_size)
        assert torch.allclose(h, one, atol=1e-5)  # the padding after a sequence changes nothing in it
        assert torch.allclose(stacked[:, 1], h, atol=1e-5)  # the last entry is the final (normed) hidden state
        assert torch.equal(stacked[:, 0], model.get_input_embeddings()(torch.tensor(ids)))  # entry 0: the embeddings


def test_softmax_restriction_and_its_targets():
    lm_weight = torch.arange(12.0).view(6, 2)  # 6 tokens, hidden 2
    remap, rows = softmax_restriction(torch.tensor([4, 1]), lm_weight)
    assert remap.tolist() == [-1, 1, -1, -1, 0, -1] and torch.equal(rows, lm_weight[[4, 1]])
    targets = torch.tensor([[4, 1], [2, -1], [-1, 4]])
    assert softmax_targets(targets, remap).tolist() == [[0, 1], [-100, -100], [-100, 0]]


def test_the_teacher_is_the_base_models_prediction_ahead(data):
    model, features = data
    idx = torch.arange(len(features.hidden))
    teacher = teacher_logits(features, idx, 2, model.get_output_embeddings().weight.detach())  # [M, 2, V]
    valid = features.targets >= 0
    assert valid.sum() > 100
    assert torch.equal(teacher.argmax(-1)[valid], features.targets[valid])


def test_head_losses_cross_entropy_and_kl_over_rows_with_a_target():
    torch.manual_seed(0)
    logits, teacher = torch.randn(6, 2, 5), torch.randn(6, 2, 5)
    target = torch.tensor([[0, 1], [2, -100], [4, 3], [-100, -100], [1, 0], [3, 2]])
    expected = torch.stack([torch.nn.functional.cross_entropy(logits[:, k], target[:, k], ignore_index=-100) for k in range(2)])
    assert torch.allclose(head_losses(logits, target), expected)
    assert torch.allclose(head_losses(teacher, target, teacher), torch.zeros(2), atol=1e-6)
    kl = head_losses(logits, target, teacher)
    assert (kl > 0.05).all()
    changed = logits.clone()
    changed[3] = 100.0  # a row without targets does not count
    assert torch.allclose(head_losses(changed, target, teacher), kl)
    assert head_losses(logits, torch.full((6, 2), -100), teacher).tolist() == [0.0, 0.0]


def test_training_on_the_teacher_distribution_learns_the_greedy_tokens(data, tmp_path):
    model, features = data
    heads = fresh_heads(model)
    before = head_accuracy(heads, features.hidden, features.targets, features.roots)
    cfg = TrainConfig(num_heads=2, epochs=15, batch_size=64, lr=1e-2, target="distribution")
    train_heads(heads, features, cfg, tmp_path / "state.pt", model.get_output_embeddings().weight, progress=False)
    after = head_accuracy(heads, features.hidden, features.targets, features.roots)
    assert after["top1"][0] > before["top1"][0] + 0.1


def test_resume_continues_from_the_saved_step_and_reproduces_an_uninterrupted_run(data, tmp_path, monkeypatch):
    """A run killed right after its first checkpoint resumes at that step: it runs only the steps left, and ends
    where an uninterrupted run ends. A checkpoint of another configuration is refused."""
    model, features = data
    cfg = TrainConfig(num_heads=2, epochs=2, batch_size=32, lr=1e-2)
    weight = model.get_output_embeddings().weight
    straight = fresh_heads(model)
    full = train_heads(straight, features, cfg, tmp_path / "a.pt", weight, progress=False)
    assert full["resumed_from"] == 0 and full["steps_run"] == full["steps"]

    import treeopt.train_heads as th

    class Stop(Exception):
        pass

    real_save = torch.save
    saves = []

    def save_then_stop(obj, path):  # the process dies while writing its second checkpoint: the first one is in place
        saves.append(obj["step"])
        if len(saves) == 2:
            raise Stop
        real_save(obj, path)

    monkeypatch.setattr(th.torch, "save", save_then_stop)
    monkeypatch.setattr(th, "CHECKPOINT_EVERY", 5)
    with pytest.raises(Stop):
        train_heads(fresh_heads(model), features, cfg, tmp_path / "b.pt", weight, progress=False)
    monkeypatch.setattr(th.torch, "save", real_save)
    assert saves == [5, 10] and torch.load(tmp_path / "b.pt", weights_only=True)["step"] == 5
    resumed = fresh_heads(model)
    result = train_heads(resumed, features, cfg, tmp_path / "b.pt", weight, progress=False)
    assert result["resumed_from"] == 5 and result["steps_run"] == full["steps"] - 5  # counted, not assumed
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    short = TrainConfig(num_heads=2, epochs=1, batch_size=32, lr=1e-2)
    with pytest.raises(TrainError, match="different configuration"):
        train_heads(fresh_heads(model), features, short, tmp_path / "b.pt", weight, progress=False)


def test_bad_inputs(tmp_path):
    with pytest.raises(TrainError, match="--num-heads 0"):
        TrainConfig(num_heads=0).validate()
    with pytest.raises(TrainError, match="--target 'soft'"):
        TrainConfig(target="soft").validate()
    with pytest.raises(TrainError, match="needs --shared-lm-head"):
        TrainConfig(target="distribution", shared_lm_head=False).validate()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(TrainError, match="no rows"):
        read_training_rows(str(empty))
    with pytest.raises(TrainError, match="no such file"):
        read_training_rows(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"foo": 1}\n')
    with pytest.raises(TrainError, match="bad.jsonl:1"):
        read_training_rows(str(bad))
    out = tmp_path / "heads"
    MedusaHeads(HeadsConfig(2, 1, 8, 16, True)).save(out)
    with pytest.raises(TrainError, match="already holds Medusa heads"):
        check_output_folder(out, TrainConfig(), overwrite=False)
    check_output_folder(out, TrainConfig(), overwrite=True)


def test_text_rows_are_read(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "hi"}) + "\n" + json.dumps({"text": "some text"}) + "\n")
    prompts, texts, _ = read_training_rows(str(rows))
    assert prompts == ["hi"] and texts == ["some text"]


def test_a_draft_vocabulary_is_the_training_softmax(data, tmp_path):
    model, features = data
    keep = torch.arange(0, VOCAB, 2)  # even tokens only: odd targets can never be guessed, so they are skipped
    heads = fresh_heads(model)
    cfg = TrainConfig(num_heads=2, epochs=3, batch_size=64, lr=1e-2)
    result = train_heads(heads, features, cfg, tmp_path / "state.pt", model.get_output_embeddings().weight,
                         progress=False, softmax_vocab=keep)
    assert result["softmax"] == "draft" and result["softmax_vocab"] == len(keep)
    heads.set_draft_vocab(keep)
    even = features.targets % 2 == 0
    acc = head_accuracy(heads, features.hidden, torch.where(even, features.targets, -1), features.roots)
    assert acc["top1"][0] > 0.5


def test_hard_negatives_join_the_restricted_softmax(data, tmp_path):
    """Targets use two tokens only; the softmax must still see the tokens the heads rank highest."""
    model, features = data
    narrow = type(features)(features.hidden, torch.where(features.targets >= 0, 5 + features.targets % 2, -1),
                            features.sequence, features.roots)
    heads = fresh_heads(model)
    cfg = TrainConfig(num_heads=2, epochs=1, batch_size=64, lr=1e-2)
    result = train_heads(heads, narrow, cfg, tmp_path / "state.pt", model.get_output_embeddings().weight, progress=False)
    assert result["softmax_vocab"] >= 8  # a single position's full-vocabulary top-8 is 8 distinct tokens


def test_generation_resumes_after_a_run_killed_mid_line(tmp_path):
    from treeopt.distill import generate_trajectories, read_trajectories

    model = tiny_model("llama", seed=5)
    loaded = loaded_tiny(model, eos=())
    prompts = [[4 + i, 7, 9] for i in range(6)]
    path = tmp_path / "answers.jsonl"
    first = generate_trajectories(loaded, prompts[:3], path, 8, batch_size=3)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"prompt_ids": [10, 7, 9], "response_')  # killed mid-write
    assert len(read_trajectories(path)) == 3  # the partial line is not a trajectory
    every = generate_trajectories(loaded, prompts, path, 8, batch_size=3)
    assert [t.prompt_ids for t in every[:3]] == [t.prompt_ids for t in first]
    assert sorted(map(tuple, (t.prompt_ids for t in every))) == sorted(map(tuple, prompts))
    assert all(t.response_ids == hf_greedy(model, t.prompt_ids, 8, []) for t in every)
    path.write_text('{"prompt_ids": [1]}\n' + path.read_text())
    with pytest.raises(ValueError, match="answers.jsonl:1"):
        read_trajectories(path)


def test_answers_off_the_greedy_path_keep_only_on_path_targets(tmp_path):
    """An answer written in another dtype leaves the fp32 greedy path at some token: targets are the model's
    own argmax, and a head's target is kept only while the text it skips over is still the greedy path."""
    model = tiny_model("llama", seed=5)
    prompt = [4, 7, 9]
    greedy = hf_greedy(model, prompt, 12, [])
    off = (greedy[5] + 1) % VOCAB  # new token 6 (index 5) is not what the model would say
    answer = greedy[:5] + [off] + hf_greedy(model, prompt + greedy[:5] + [off], 6, [])
    features = compute_features(loaded_tiny(model, eos=()), [Trajectory(prompt, answer)], 3, tmp_path, ["greedy_path"])
    assert features.roots[:5].tolist() == greedy[:5]  # position t (0 = last prompt token): root is new token t+1
    assert features.roots[5].item() == greedy[5] != off  # the model's own prediction, not the text
    # head k at t targets new token t+k+2; it is kept only if new tokens t+1..t+k+1 are all on the path
    for t in range(len(answer)):
        for k in range(3):
            crosses = t <= 5 <= t + k  # the window of text new tokens t+1..t+k+1 holds index 5
            if t + k >= len(answer) or crosses:  # past the end of what the model has read, or off the path
                assert features.targets[t, k] == -1, (t, k)
            elif t + k < 5:
                assert features.targets[t, k] == greedy[t + k + 1], (t, k)
            elif t + k + 1 < len(answer):  # after the detour the answer is greedy again
                assert features.targets[t, k] == answer[t + k + 1], (t, k)


def test_answers_shorter_than_the_heads_reach(tmp_path):
    """A one- or two-token answer (an early EOS) under 4 heads: every target past the answer is -1."""
    model = tiny_model("llama", seed=5)
    prompt = [4, 7, 9]
    g = hf_greedy(model, prompt, 3, [])
    trajs = [Trajectory(prompt, g[:1]), Trajectory(prompt, g[:2])]
    features = compute_features(loaded_tiny(model, eos=()), trajs, 4, tmp_path, ["greedy_path"] * 2)
    # targets are the model's argmax wherever it has read the text, so one token past the answer is known
    assert features.targets.tolist() == [[g[1], -1, -1, -1], [-1] * 4,
                                         [g[1], g[2], -1, -1], [g[2], -1, -1, -1], [-1] * 4]


def test_answers_appended_later_complete_a_cached_partial_chunk(tmp_path):
    """More answers after a finished run: the last chunk, cached when it held fewer, is featurised again."""
    model = tiny_model("llama", seed=5)
    loaded = loaded_tiny(model, eos=())
    trajs = [Trajectory([4 + i, 7, 9], hf_greedy(model, [4 + i, 7, 9], 5, [])) for i in range(4)]
    compute_features(loaded, trajs[:3], 2, tmp_path / "cache", chunk=2)  # chunk 1 holds one answer
    resumed = compute_features(loaded, trajs, 2, tmp_path / "cache", chunk=2)
    fresh = compute_features(loaded, trajs, 2, tmp_path / "fresh", chunk=2)
    assert resumed.hidden.shape[0] == fresh.hidden.shape[0] == 4 * 6  # the last prompt token and 5 answer tokens each
    assert torch.equal(resumed.targets, fresh.targets) and torch.equal(resumed.hidden, fresh.hidden)


@pytest.mark.parametrize("kind", ["root-conditioned", "sequential"])
def test_conditioned_heads_train_and_load_strictly(data, tmp_path, kind):
    model, features = data
    heads = MedusaHeads(HeadsConfig(2, 1, model.config.hidden_size, VOCAB, True, **HeadsConfig.flags(kind)))
    heads.init_from_base(model.get_output_embeddings())
    heads.attach_base(model)
    before = head_accuracy(heads, features.hidden, features.targets, features.roots)
    cfg = TrainConfig(num_heads=2, epochs=15, batch_size=64, lr=1e-2, kind=kind)
    train_heads(heads, features, cfg, tmp_path / "state.pt", model.get_output_embeddings().weight, progress=False)
    after = head_accuracy(heads, features.hidden, features.targets, features.roots)
    assert after["top1"][0] > before["top1"][0] + 0.1
    assert all(proj.weight.abs().sum() > 0 for proj in heads.root_proj)  # the root projections learned something
    if kind == "sequential":
        assert heads.path_proj[1][0].weight.abs().sum() > 0  # so did head 1's projection of the draft token before it
    heads.save(tmp_path / "heads")
    loaded = load_heads(tmp_path / "heads", model)
    h, root, path = features.hidden[:5], features.roots[:5], true_path(features.targets[:5])
    with torch.inference_mode():
        assert torch.allclose(loaded(h, root=root, path=path), heads(h, root=root, path=path), atol=1e-5)
    with pytest.raises(TrainError, match="do not match"):
        train_heads(heads, features, TrainConfig(num_heads=2, kind="plain"), tmp_path / "s2.pt", model.get_output_embeddings().weight)


def test_nothing_after_eos_is_a_target(tmp_path):
    model = tiny_model("llama", seed=5)
    loaded = loaded_tiny(model, eos=(1,))
    answer = hf_greedy(model, [4, 7, 9], 8, []) + [1]  # ends in EOS (token 1)
    with_eos = compute_features(loaded, [Trajectory([4, 7, 9], answer)], 3, tmp_path / "a", ["argmax"])
    without = compute_features(loaded, [Trajectory([4, 7, 9], answer[:-1] + [5])], 3, tmp_path / "b", ["argmax"])
    for k in range(3):  # head k at t = len - k - 1 would guess the token after EOS
        assert with_eos.targets[len(answer) - k - 1, k] == -1 and without.targets[len(answer) - k - 1, k] >= 0


def test_features_of_sequences_batched_together_equal_one_at_a_time(tmp_path):
    """Sequences of different lengths share a forward (right-padded): each one's hidden states are its own."""
    model = tiny_model("llama", seed=5)
    loaded = loaded_tiny(model, eos=())
    trajs = [Trajectory([4 + i, 7], hf_greedy(model, [4 + i, 7], 3 + 4 * i, [])) for i in range(5)]
    together = compute_features(loaded, trajs, 3, tmp_path / "together", chunk=64)
    alone = compute_features(loaded, trajs, 3, tmp_path / "alone", chunk=1)
    assert torch.allclose(together.hidden, alone.hidden, atol=1e-5)
    assert torch.equal(together.targets, alone.targets) and torch.equal(together.roots, alone.roots)


@pytest.mark.parametrize("lookup", [True, False])
def test_new_heads_carry_the_context_lookup_setting(tmp_path, lookup):
    from medusa_runtime.lookup import ContextLookup
    from treeopt.train_heads import new_heads

    model = tiny_model("llama", seed=0)
    heads, _ = new_heads(loaded_tiny(model), TrainConfig(num_heads=2, draft_vocab=0, context_lookup=lookup), [])
    heads.save(tmp_path)
    assert load_heads(tmp_path, model).config.context_lookup == (ContextLookup() if lookup else None)


def test_epoch_batches_are_random_rows_or_whole_answers(data):
    from treeopt.train_heads import answer_spans, epoch_batches, split_answers

    _, features = data
    train_idx, _ = split_answers(features, 0.1, 0)
    rows = epoch_batches(features, train_idx, 64, 3, whole_answers=False)
    expected = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(3))].split(64)
    assert all(torch.equal(a, b) for a, b in zip(rows, expected)) and len(rows) == len(expected)
    answers = epoch_batches(features, train_idx, 64, 3, whole_answers=True)
    assert torch.equal(torch.cat(answers).sort().values, train_idx)  # every training row once per epoch
    for batch in answers:
        assert len(batch) <= 64
        for s, e in answer_spans(features.sequence[batch]):  # each answer whole, from its first row, in order
            answer = int(features.sequence[batch[s]])
            assert torch.equal(batch[s:e], (features.sequence == answer).nonzero().squeeze(1))
    assert epoch_batches(features, train_idx, 64, 4, whole_answers=True)[0].tolist() != answers[0].tolist()


def test_prefix_attention_heads_train_on_whole_answers(data, tmp_path):
    from treeopt.train_heads import read_context_rows

    model, features = data
    heads = MedusaHeads(HeadsConfig(2, 1, model.config.hidden_size, VOCAB, True, prefix_attention=PrefixConfig(4, 48),
                                    **HeadsConfig.flags("sequential")))
    heads.init_from_base(model.get_output_embeddings())
    heads.attach_base(model)
    with pytest.raises(ValueError, match="pass sequence="):
        head_accuracy(heads, features.hidden, features.targets, features.roots)
    before = head_accuracy(heads, features.hidden, features.targets, features.roots, features.sequence)
    cfg = TrainConfig(num_heads=2, epochs=15, batch_size=64, lr=1e-2, kind="sequential", prefix_attention=True)
    train_heads(heads, features, cfg, tmp_path / "state.pt", model.get_output_embeddings().weight, progress=False)
    after = head_accuracy(heads, features.hidden, features.targets, features.roots, features.sequence)
    assert after["top1"][0] > before["top1"][0] + 0.1
    assert heads.prefix.out.weight.abs().sum() > 0 and heads.prefix.down.weight.abs().sum() > 0  # the layer learned
    with torch.no_grad():  # each answer's rows read the layer over that answer alone
        z = read_context_rows(heads, features.hidden, features.sequence)
        first = features.sequence == features.sequence[0]
        torch.testing.assert_close(z[first], heads.read_context(features.hidden[first][None])[0])
    heads.save(tmp_path / "heads")
    loaded = load_heads(tmp_path / "heads", model)
    again = head_accuracy(loaded, features.hidden, features.targets, features.roots, features.sequence)
    assert again["top1"] == pytest.approx(after["top1"], abs=1e-3)


def test_new_heads_with_prefix_attention_take_the_base_sizes(tmp_path):
    from treeopt.train_heads import new_heads

    model = tiny_model("llama", seed=0)
    heads, _ = new_heads(loaded_tiny(model), TrainConfig(num_heads=2, draft_vocab=0, kind="sequential", prefix_attention=True), [])
    assert heads.config.prefix_attention == PrefixConfig(model.config.num_attention_heads, model.config.intermediate_size)
    x = torch.randn(1, 5, model.config.hidden_size)
    with torch.no_grad():
        assert torch.equal(heads.read_context(x), x)  # a fresh layer: the heads guess as without it
    heads.save(tmp_path / "p")
    with pytest.raises(TrainError, match="with prefix attention have tensors .* without prefix attention lack"):
        new_heads(loaded_tiny(model), TrainConfig(num_heads=2, draft_vocab=0, kind="sequential", init_from=str(tmp_path / "p")), [])
