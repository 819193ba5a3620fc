"""calibrate --shard I/N and merge-stats: N independent jobs merge into exactly the stats of one run."""

import json

import pytest
from typer.testing import CliRunner

from treeopt.calibration import ROLLOUT_BATCH, ShardError, parse_shard, shard_prompts
from treeopt.cli import app
from treeopt.stats import CalibrationStats, StatsError, load_stats, merge_shards


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_shards_partition_the_prompts_in_whole_rollout_batches(count):
    shards = [shard_prompts(37, i, count) for i in range(count)]
    assert sorted(i for s in shards for i in s) == list(range(37))
    for start in range(0, 37, ROLLOUT_BATCH):  # each batch of one run lies wholly inside one shard
        block = set(range(start, min(start + ROLLOUT_BATCH, 37)))
        assert sum(block <= set(s) for s in shards) == 1
    assert all(len(s) >= ROLLOUT_BATCH for s in shards[:2])  # and shards are not one prompt each


def test_parse_shard():
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(ShardError, match="--shard"):
            parse_shard(bad)


@pytest.fixture(scope="module")
def many_prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("shards") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"w{i % 50} w{(i * 7) % 50} w{(i * 3) % 50}"}) + "\n" for i in range(19)))
    return path


def test_merged_shards_equal_one_run(tiny_folder, many_prompts, tmp_path):
    common = ["--model", tiny_folder / "model", "--heads", tiny_folder / "heads", "--prompts", many_prompts,
              "--max-new-tokens", 12, "--topk", 3]
    r = invoke("calibrate", "--out", tmp_path / "one.json", *common)
    assert r.exit_code == 0, r.output
    chain = " ".join(f"{c:.3f}" for c in load_stats(tmp_path / "one.json").chain_conditionals())
    assert f"rank 0 along the path, k = 2..: {chain}\n" in r.output
    for i in range(3):
        r = invoke("calibrate", "--out", tmp_path / f"s{i}.json", "--shard", f"{i}/3", *common)
        assert r.exit_code == 0, r.output
    r = invoke("merge-stats", tmp_path / "s2.json", tmp_path / "s0.json", tmp_path / "s1.json", "--out", tmp_path / "merged.json")
    assert r.exit_code == 0, r.output
    one, merged = load_stats(tmp_path / "one.json"), load_stats(tmp_path / "merged.json")
    assert merged.rollouts == one.rollouts and merged.new_tokens == one.new_tokens
    assert merged.prompt_tokens == one.prompt_tokens and len(one.prompt_tokens) == 19 and min(one.prompt_tokens) >= 1
    assert merged.indices() == one.indices() == list(range(19))
    assert merged.prefix_counts() == one.prefix_counts()
    for key in ("model", "heads_sha256", "prompt_source", "prompts_total"):
        assert merged.provenance[key] == one.provenance[key]
    # a missing shard and a shard given twice are refused, naming the fix
    r = invoke("merge-stats", tmp_path / "s0.json", tmp_path / "s1.json", "--out", tmp_path / "bad.json")
    assert r.exit_code == 2 and "2/3" in r.output and "missing" in r.output and not (tmp_path / "bad.json").exists()
    r = invoke("merge-stats", tmp_path / "s0.json", tmp_path / "s0.json", tmp_path / "s1.json", "--out", tmp_path / "bad.json")
    assert r.exit_code == 2 and "also" in r.output
    r = invoke("merge-stats", tmp_path / "one.json", "--out", tmp_path / "bad.json")
    assert r.exit_code == 2 and "--shard" in r.output


def shard(index, count, **provenance):
    return CalibrationStats(1, 2, [[[0]]], [2], {"shard": [index, count], "prompts_total": 2, "model": "m", **provenance}, [index])


def test_shards_of_different_runs_are_refused():
    with pytest.raises(StatsError, match="model is 'other'"):
        merge_shards([("a", shard(0, 2)), ("b", shard(1, 2, model="other"))])
    with pytest.raises(StatsError, match="sampling is .*temperature.*0.7"):  # shards calibrated at other sampling settings
        merge_shards([("a", shard(0, 2, sampling={"temperature": 0.0})),
                      ("b", shard(1, 2, sampling={"temperature": 0.7, "top_k": 0, "top_p": 1.0, "seed": 0}))])
    with pytest.raises(StatsError, match="one of 2 shards"):
        merge_shards([("a", shard(0, 2)), ("b", shard(1, 3))])
    with pytest.raises(StatsError, match="0 <= I < N"):
        merge_shards([("a", shard(0, 2)), ("b", shard(2, 2))])


def test_merge_does_not_depend_on_the_order_of_the_files():
    a, b = shard(0, 2, device="cpu"), shard(1, 2, device="cpu")
    assert merge_shards([("a", a), ("b", b)]) == merge_shards([("b", b), ("a", a)])
