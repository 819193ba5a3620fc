from types import SimpleNamespace

import torch

from conftest import tiny_heads, tiny_model
from medusa_runtime.decoding import MedusaDecoder
from treeopt.profile import profile_latency, synthetic_tree


def record_steps(monkeypatch) -> list[tuple[int, int, tuple[int, ...]]]:
    """Every timed step's (batch size, tree nodes, row lengths), in order."""
    seen = []
    real_step = MedusaDecoder.step

    def recording_step(self, state, oracle=None):
        seen.append((state.batch_size, self.buffers.num_nodes, tuple(state.cache.lengths)))
        return real_step(self, state, oracle)

    monkeypatch.setattr(MedusaDecoder, "step", recording_step)
    return seen


def tiny_loaded():
    model = tiny_model("llama")
    return SimpleNamespace(model=model, device=torch.device("cpu"), dtype=torch.float32, name="tiny")


def test_sizes_are_timed_round_robin_and_the_plain_step_is_always_measured(monkeypatch):
    loaded = tiny_loaded()
    seen = record_steps(monkeypatch)
    result = profile_latency(loaded, tiny_heads(loaded.model, num_heads=2), sizes=(4, 2), repeats=3, warmup=1, progress=False)
    # one step of every size per round, so a slow phase of the machine hits every size alike
    assert [nodes for _, nodes, _ in seen] == [1, 2, 4] * 4
    assert result["plain_step"]["nodes"] == 1 and result["order"] == "round-robin"
    assert [r["nodes"] for r in result["verify"]] == [2, 4]
    assert all(r["repeats"] == 3 and r["min_ms"] <= r["median_ms"] <= r["max_ms"] for r in result["verify"])


def test_synthetic_tree_is_prefix_closed_and_sized():
    spec = synthetic_tree(12, depth=3)
    assert spec.nodes == 12
    assert all(p[:-1] in set(spec.paths) | {()} for p in spec.paths)


def test_each_batch_size_is_profiled_with_rows_of_different_lengths(monkeypatch):
    loaded = tiny_loaded()
    seen = record_steps(monkeypatch)
    result = profile_latency(loaded, tiny_heads(loaded.model, num_heads=2), sizes=(3,), repeats=2, warmup=1, context=20,
                             progress=False, batch_sizes=(4, 2))
    assert [b["batch_size"] for b in result["batches"]] == [1, 2, 4]  # batch 1 always: the file's default rows
    assert result["plain_step"] == result["batches"][0]["plain_step"] and result["version"] == 2
    # 2 timed rounds over 2 visits (passes 3, capped at the rounds), each visit a warm-up round and one timed round
    assert [(b, n) for b, n, _ in seen] == ([(1, 1), (1, 3)] * 2 + [(2, 1), (2, 3)] * 2 + [(4, 1), (4, 3)] * 2) * 2
    assert result["passes"] == 2 and all(r["repeats"] == 2 for b in result["batches"] for r in [b["plain_step"], *b["verify"]])
    first_step_of_4 = next(lengths for b, _, lengths in seen if b == 4)
    assert len(set(first_step_of_4)) == 4  # rows of different lengths: the per-row cache writes are what is timed
    for batch in result["batches"]:  # a batch's prefill at two prompt lengths, every repeat of every visit
        assert [p["tokens"] for p in batch["prefill"]] == [5, 20] and all(p["p10_ms"] > 0 for p in batch["prefill"])
        assert all(p["repeats"] == 5 for p in batch["prefill"])
    one = profile_latency(loaded, None, sizes=(1,), repeats=4, warmup=0, context=8, progress=False, batch_sizes=(2,), passes=1)
    assert one["passes"] == 1 and one["batches"][1]["plain_step"]["repeats"] == 4
