"""The CLI through typer's CliRunner, on a tiny model saved as a local Hugging Face folder."""

import json
import subprocess
import sys

import torch

import pytest
from typer.testing import CliRunner

from treeopt.cli import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def stats_file(tiny_folder):
    path = tiny_folder / "stats.json"
    if not path.exists():
        r = invoke("calibrate", "--model", tiny_folder / "model", "--heads", tiny_folder / "heads", "--prompts",
                   tiny_folder / "prompts.jsonl", "--max-new-tokens", 24, "--topk", 4, "--out", path)
        assert r.exit_code == 0, r.output
    return path


def bench_built_tree(tiny_folder, tmp_path, stats_file, *options):
    """Build a 4-path tree and bench it on 3 tiny prompts; returns (CLI result, tree path, report path)."""
    tree, out = tmp_path / "tree.json", tmp_path / "report.json"
    assert invoke("build", stats_file, "--budget", 4, "--out", tree).exit_code == 0
    r = invoke("bench", "--model", tiny_folder / "model", "--heads", tiny_folder / "heads", "--tree", tree,
               "--prompts", tiny_folder / "prompts.jsonl", "--select", "0:3", "--max-new-tokens", 16, "--json", out, *options)
    assert r.exit_code == 0, r.output
    return r, tree, out


def test_bench_writes_the_required_keys(tiny_folder, tmp_path, stats_file):
    r, tree, out = bench_built_tree(tiny_folder, tmp_path, stats_file)
    report = json.loads(out.read_text())
    for key in ("tokens_per_step", "tokens_per_s", "baseline_tokens_per_s", "speedup", "identical", "divergences",
                "predicted_tokens_per_step", "prompts", "nodes", "device", "dtype"):
        assert key in report
    assert report["identical"] == 1.0 and report["prompts"] == 3 and report["nodes"] == 5
    assert report["predicted_tokens_per_step"] == json.loads(tree.read_text())["meta"]["expected_tokens_per_step"]
    assert json.loads(r.output.strip().splitlines()[-1])["nodes"] == 5  # the last line is one JSON object


def test_bench_oracle_without_heads(tiny_folder, tmp_path):
    tree = tmp_path / "chain.json"
    tree.write_text(json.dumps({"format": "medusa-tree", "version": 1, "paths": [[0], [0, 0], [0, 0, 0], [0, 0, 0, 0]]}))
    r = invoke("bench", "--model", tiny_folder / "model", "--heads", "none", "--oracle", "--tree", tree,
               "--prompts", tiny_folder / "prompts.jsonl", "--select", "0:2", "--max-new-tokens", 21)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["identical"] == 1.0 and summary["tokens_per_step"] == pytest.approx(21 / 5)


def test_generate_streams_text(tiny_folder):
    r = invoke("generate", "w1 w2 w3", "--model", tiny_folder / "model", "--heads", tiny_folder / "heads", "--max-new-tokens", 8)
    assert r.exit_code == 0, r.output
    assert "tokens/step" in r.output and "w" in r.output


def test_tree_deeper_than_heads_is_a_cli_error(tiny_folder, tmp_path):
    tree = tmp_path / "deep.json"
    tree.write_text(json.dumps({"format": "medusa-tree", "version": 1, "paths": [[0], [0, 0], [0, 0, 0], [0, 0, 0, 0]]}))
    r = invoke("bench", "--model", tiny_folder / "model", "--heads", tiny_folder / "heads", "--tree", tree,
               "--prompts", tiny_folder / "prompts.jsonl")
    assert r.exit_code == 2 and "depth 4 but the heads have only 3" in r.output


def test_build_evaluate_show_export_import(stats_file, tmp_path):
    tree = tmp_path / "t.json"
    r = invoke("build", stats_file, "--budget", 6, "--out", tree)
    assert r.exit_code == 0, r.output
    spec = json.loads(tree.read_text())
    assert len(spec["paths"]) == 6 and spec["meta"]["objective"] == "shrunk"
    r = invoke("evaluate", tree, stats_file, "--json")
    evaluated = json.loads(r.output)
    # evaluate replays the tree in-sample and re-runs build's cross-validation: both agree with what build wrote
    assert evaluated["predicted_tokens_per_step"] == spec["meta"]["in_sample_tokens_per_step"]
    assert evaluated["cross_validated_tokens_per_step"] == spec["meta"]["expected_tokens_per_step"]
    r = invoke("show", tree, "--png", tmp_path / "t.png")
    assert r.exit_code == 0 and "head 1 rank" in r.output and (tmp_path / "t.png").stat().st_size > 1000
    for fmt in ("medusa", "trtllm-yaml", "triton", "json"):
        exported = tmp_path / f"t.{fmt}"
        assert invoke("export", tree, "--format", fmt, "--out", exported).exit_code == 0
        back = tmp_path / f"back-{fmt}.json"
        assert invoke("import", exported, "--out", back).exit_code == 0
        assert json.loads(back.read_text())["paths"] == spec["paths"]


def test_show_draws_several_trees_side_by_side(stats_file, tmp_path):
    import matplotlib.pyplot as plt

    small, large = tmp_path / "small.json", tmp_path / "large.json"
    assert invoke("build", stats_file, "--budget", 2, "--out", small).exit_code == 0
    assert invoke("build", stats_file, "--budget", 6, "--out", large).exit_code == 0
    assert invoke("show", small, "--png", tmp_path / "one.png").exit_code == 0
    assert invoke("show", large, "--png", tmp_path / "two.png").exit_code == 0
    r = invoke("show", small, large, "--png", tmp_path / "both.png")
    assert r.exit_code == 0, r.output
    assert r.output.count("== ") == 2 and "root (3 nodes" in r.output and "root (7 nodes" in r.output
    one, two, both = (plt.imread(tmp_path / f"{n}.png") for n in ("one", "two", "both"))
    # side by side (widths follow the titles, which differ): much wider than either, as tall as the taller one
    assert both.shape[1] > 1.5 * max(one.shape[1], two.shape[1])
    assert both.shape[0] == max(one.shape[0], two.shape[0]) and one.shape[0] != two.shape[0]


def test_build_errors_are_clear(stats_file, tmp_path):
    r = invoke("build", stats_file, "--budget", 100000, "--out", tmp_path / "x.json")
    assert r.exit_code == 2 and "lower --budget" in r.output
    r = invoke("build", tmp_path / "missing.json", "--budget", 3, "--out", tmp_path / "x.json")
    assert r.exit_code == 2 and "treeopt calibrate" in r.output
    r = invoke("build", stats_file, "--budget", "auto", "--out", tmp_path / "x.json")
    assert r.exit_code == 2 and "--latency" in r.output


def test_profile_and_build_auto(tiny_folder, stats_file, tmp_path):
    latency = tmp_path / "latency.json"
    r = invoke("profile", "--model", tiny_folder / "model", "--heads", tiny_folder / "heads", "--sizes", "1,2,4,8",
               "--repeats", 3, "--context", 16, "--out", latency)
    assert r.exit_code == 0, r.output
    data = json.loads(latency.read_text())
    assert data["plain_step"]["nodes"] == 1 and [row["nodes"] for row in data["verify"]] == [2, 4, 8]
    tree = tmp_path / "auto.json"
    r = invoke("build", stats_file, "--budget", "auto", "--latency", latency, "--max-budget", 7, "--out", tree,
               "--png", tmp_path / "curve.png")
    assert r.exit_code == 0, r.output
    meta = json.loads(tree.read_text())["meta"]
    rows = meta["throughput_curve"]  # the size is chosen by the low quantile, tokens/s predicted by medians
    chosen = max(rows, key=lambda row: (row["choice_tokens_per_s"], -row["paths"]))
    assert meta["budget"] == chosen["paths"] and meta["predicted_tokens_per_s"] == chosen["tokens_per_s"]
    assert (meta["chosen_by"], meta["predicted_by"]) == ("p10_ms", "median_ms")
    assert "predicted_speedup" in meta and (tmp_path / "curve.png").exists()


def test_tune_two_workers_share_one_study(tiny_folder, stats_file, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = [sys.executable, "-m", "treeopt", "tune", "--model", str(tiny_folder / "model"), "--heads", str(tiny_folder / "heads"),
            "--prompts", str(tiny_folder / "prompts.jsonl"), "--select", "0:2", "--holdout", "", "--stats", str(stats_file),
            "--trials", "6", "--max-budget", "8", "--max-new-tokens", "12", "--storage", storage, "--study", "shared"]
    workers = [subprocess.Popen(args + ["--out", str(tmp_path / f"w{i}.json")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
               for i in range(2)]
    outputs = [w.communicate(timeout=600)[0].decode() for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    import optuna

    study = optuna.load_study(study_name="shared", storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert 6 <= len(finished) <= 7  # both workers drew from one budget of 6 (one may overshoot by a trial)
    # each worker writes the best tree of the shared study as it saw it when it stopped
    trial_trees = [t.user_attrs.get("paths") for t in finished]
    for i in range(2):
        assert json.loads((tmp_path / f"w{i}.json").read_text())["paths"] in trial_trees


def test_sweep_measures_each_budget(tiny_folder, stats_file, tmp_path):
    latency = tmp_path / "latency.json"
    assert invoke("profile", "--model", tiny_folder / "model", "--heads", tiny_folder / "heads", "--sizes", "1,2,4,8",
                  "--repeats", 2, "--context", 16, "--out", latency).exit_code == 0
    out = tmp_path / "sweep.json"
    r = invoke("sweep", stats_file, "--latency", latency, "--budgets", "1,3", "--no-neighbours", "--model", tiny_folder / "model",
               "--heads", tiny_folder / "heads", "--prompts", tiny_folder / "prompts.jsonl", "--select", "0:2",
               "--max-new-tokens", 12, "--json", out)
    assert r.exit_code == 0, r.output
    summary = json.loads(out.read_text())
    assert [row["label"] for row in summary["rows"]][:3] == ["empty", "budget 1", "budget 3"]
    assert summary["rows"][0]["tokens_per_step"] == 1.0


@pytest.mark.parametrize("sampling", [(), ("--temperature", 0.8, "--top-k", 20)], ids=["greedy", "t0.8-topk20"])
def test_demo_writes_every_file_and_resumes(tiny_folder, tmp_path, sampling):
    args = ["demo", "--model", tiny_folder / "model", "--heads", tiny_folder / "heads", "--calibrate-select", "0:3",
            "--bench-select", "3:5", "--max-new-tokens", 12, "--out", tmp_path / "demo", *sampling]
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    for name in ("stats.json", "latency.json", "tree.json", "tree.png", "curve.png", "report.json"):
        assert (tmp_path / "demo" / name).exists(), name
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["identical"] == 1.0 and report["prompts"] == 2
    assert report["temperature"] == (0.8 if sampling else 0.0) and report["acceptance"] == ("sample" if sampling else "greedy")
    stats = json.loads((tmp_path / "demo" / "stats.json").read_text())
    assert stats["provenance"]["sampling"]["temperature"] == report["temperature"] and "command" in stats["provenance"]
    again = invoke(*args)
    assert again.exit_code == 0 and "reusing" in again.output
    if sampling:  # other settings: the stats are calibrated again, not reused
        other = invoke(*args[:-4], "--temperature", 0.5)
        assert other.exit_code == 0 and "calibrate: reusing" not in other.output and "temperature 0.5" in other.output


def test_commands_that_need_no_model_do_not_import_torch(stats_file, tmp_path):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from treeopt.cli import app\n"
        f"r = CliRunner().invoke(app, ['build', {str(stats_file)!r}, '--budget', '3', '--out', {str(tmp_path / 't.json')!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(app, ['evaluate', {str(tmp_path / 't.json')!r}, {str(stats_file)!r}])\n"
        f"r = CliRunner().invoke(app, ['export', {str(tmp_path / 't.json')!r}, '--format', 'triton'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'a no-model command imported torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_train_heads_writes_heads_a_draft_vocab_and_a_readme(tiny_folder, tmp_path):
    import random

    from medusa_runtime.heads import load_heads

    rng = random.Random(3)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": " ".join(f"w{rng.randrange(60)}" for _ in range(30))}) + "\n" for _ in range(40)))
    out = tmp_path / "heads"
    args = ("train-heads", "--model", tiny_folder / "model", "--data", rows, "--num-heads", 2, "--epochs", 2,
            "--batch-size", 64, "--lr", 0.01, "--mtbench-select", "", "--kind", "root-conditioned", "--draft-vocab", 16, "--out", out)
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["medusa_root_conditioned"] is True
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(out / "medusa_lm_head.safetensors").values()} == {torch.float16}
    draft = json.loads((out / "draft_vocab.json").read_text())
    assert draft["format"] == "medusa-draft-vocab" and len(draft["tokens"]) == 16
    counts = {}
    for line in rows.read_text().splitlines():  # text rows: the first token is the prompt, the rest the "answer"
        for word in json.loads(line)["text"].split()[1:]:
            counts[word] = counts.get(word, 0) + 1
    top = sorted(counts.values(), reverse=True)
    assert sorted((counts[f"w{t - 4}"] for t in draft["tokens"]), reverse=True) == top[:16]  # the 16 most frequent
    assert "## Draft vocabulary" in (out / "README.md").read_text()
    assert load_heads(out).draft_vocab.tolist() == draft["tokens"] and load_heads(out).config.root_conditioned
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({"format": "medusa-tree", "version": 1, "paths": [[0], [1], [0, 0]]}))
    r = invoke("bench", "--model", tiny_folder / "model", "--heads", out, "--tree", tree,
               "--prompts", tiny_folder / "prompts.jsonl", "--select", "0:2", "--max-new-tokens", 12)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["draft_vocab"] == 16 and summary["identical"] == 1.0 and "guess from 16 tokens" in r.output
    assert invoke(*args).exit_code == 0  # the same command again resumes (nothing left to train) and succeeds
    r = invoke(*args[:-4], "--draft-vocab", -1, "--out", out)
    assert r.exit_code != 0 and "--draft-vocab -1" in r.output


def test_train_heads_sequential_from_root_conditioned_heads(tiny_folder, tmp_path):
    """--kind sequential --init-from: starts from the given heads' guesses and draft vocabulary, then runs losslessly."""
    from safetensors.torch import load_file

    from medusa_runtime.heads import load_heads

    rows = greedy_text_rows(tiny_folder, tmp_path)
    common = ("train-heads", "--model", tiny_folder / "model", "--data", rows, "--num-heads", 3, "--epochs", 2,
              "--batch-size", 64, "--lr", 0.01, "--mtbench-select", "", "--draft-vocab", 24)
    start, seq = tmp_path / "start", tmp_path / "seq"
    assert invoke(*common, "--kind", "root-conditioned", "--out", start).exit_code == 0
    r = invoke(*common, "--kind", "sequential", "--init-from", start, "--out", seq)
    assert r.exit_code == 0, r.output
    config = json.loads((seq / "config.json").read_text())
    assert config["medusa_sequential"] is True and "sequential" in (seq / "README.md").read_text()
    state = load_file(seq / "medusa_lm_head.safetensors")
    assert {k for k in state if k.startswith("path.")} == {"path.1.0.weight", "path.2.0.weight", "path.2.1.weight"}
    assert all(state[k].abs().sum() > 0 for k in state if k.startswith("path."))  # the path projections learned
    assert load_heads(seq).draft_vocab.tolist() == load_heads(start).draft_vocab.tolist()  # kept from --init-from
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({"format": "medusa-tree", "version": 1, "paths": [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]]}))
    r = invoke("bench", "--model", tiny_folder / "model", "--heads", seq, "--tree", tree,
               "--prompts", tiny_folder / "prompts.jsonl", "--select", "0:2", "--max-new-tokens", 12)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["identical"] == 1.0
    r = invoke(*common, "--kind", "root-conditioned", "--init-from", seq, "--out", tmp_path / "back")
    assert r.exit_code != 0 and "sequential heads have tensors (path." in r.output
    r = invoke(*common, "--kind", "hydra", "--out", tmp_path / "bad")
    assert r.exit_code != 0 and "--kind 'hydra'" in r.output
    r = invoke(*common, "--kind", "sequential", "--num-heads", 2, "--init-from", start, "--out", tmp_path / "bad2")
    assert r.exit_code != 0 and "--init-from" in r.output and "(3, 1, True" in r.output


def greedy_text_rows(tiny_folder, tmp_path):
    """Training rows of the tiny model's own greedy text, so that every head has targets along its path."""
    from transformers import AutoModelForCausalLM

    from conftest import hf_greedy

    model = AutoModelForCausalLM.from_pretrained(tiny_folder / "model")
    rows = tmp_path / "rows.jsonl"
    texts = [[4 + i, 9 + i % 7, 20] + hf_greedy(model, [4 + i, 9 + i % 7, 20], 30, []) for i in range(40)]
    rows.write_text("".join(json.dumps({"text": " ".join(f"w{t - 4}" for t in ids)}) + "\n" for ids in texts))
    return rows


def test_prefix_attention_heads_through_the_cli(tiny_folder, tmp_path):
    """train-heads --prefix-attention writes heads whose layer learned; they load, calibrate (recorded in the provenance),
    bench losslessly, and export warns that engines do not run them."""
    from safetensors.torch import load_file

    common = ("train-heads", "--model", tiny_folder / "model", "--data", greedy_text_rows(tiny_folder, tmp_path), "--num-heads", 3,
              "--epochs", 2, "--batch-size", 64, "--lr", 0.01, "--mtbench-select", "", "--draft-vocab", 24, "--kind", "sequential")
    heads = tmp_path / "prefix"
    r = invoke(*common, "--prefix-attention", "--out", heads)
    assert r.exit_code == 0, r.output
    config = json.loads((heads / "config.json").read_text())
    assert config["medusa_prefix_attention"] == {"num_attention_heads": 4, "intermediate_size": 64}  # the tiny base's own sizes
    assert "prefix attention" in (heads / "README.md").read_text()
    state = load_file(heads / "medusa_lm_head.safetensors")
    assert state["prefix.out.weight"].abs().sum() > 0 and state["prefix.down.weight"].abs().sum() > 0
    stats, tree = tmp_path / "stats.json", tmp_path / "tree.json"
    r = invoke("calibrate", "--model", tiny_folder / "model", "--heads", heads, "--prompts", tiny_folder / "prompts.jsonl",
               "--max-new-tokens", 24, "--topk", 4, "--out", stats)
    assert r.exit_code == 0, r.output
    assert json.loads(stats.read_text())["provenance"]["prefix_attention"] == config["medusa_prefix_attention"]
    assert invoke("build", stats, "--budget", 5, "--for", "trtllm", "--out", tree).exit_code == 0
    r = invoke("bench", "--model", tiny_folder / "model", "--heads", heads, "--tree", tree,
               "--prompts", tiny_folder / "prompts.jsonl", "--select", "0:3", "--max-new-tokens", 16)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["identical"] == 1.0
    r = invoke("export", tree, "--format", "trtllm")
    assert r.exit_code == 0 and "prefix attention" in r.output and "sequential heads" in r.output, r.output
    assert "draft vocabulary of 24 tokens" in r.output and "calibrate --engine trtllm" in r.output
    r = invoke(*common, "--init-from", heads, "--out", tmp_path / "back")
    assert r.exit_code != 0 and "with prefix attention have tensors (prefix." in r.output


def test_train_heads_says_why_answers_stop_short_of_tokens(tiny_folder, tmp_path):
    rows = tmp_path / "prompts.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"w{i} w{i + 2} w{i + 5}"}) + "\n" for i in range(5)))
    out = tmp_path / "heads"
    r = invoke("train-heads", "--model", tiny_folder / "model", "--data", rows, "--num-heads", 2, "--epochs", 1,
               "--batch-size", 16, "--max-new-tokens", 6, "--tokens", 100000, "--num-prompts", 3, "--draft-vocab", 0,
               "--target", "distribution", "--mtbench-select", "", "--out", out)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["treeopt_train"]["config"]["target"] == "distribution"
    assert len((out / ".work" / "trajectories.jsonl").read_text().splitlines()) == 3  # --num-prompts drew 3 of 5
    why = "short of --tokens 100000: every prompt of the 3 drawn that fits --max-prompt-tokens 128 is answered"
    assert why in r.output and "raise --num-prompts (the data holds 5 distinct prompts)" in r.output
    assert why in (out / "README.md").read_text()
    r = invoke("train-heads", "--model", tiny_folder / "model", "--data", rows, "--num-prompts", 0, "--out", tmp_path / "h0")
    assert r.exit_code != 0 and "--num-prompts must be positive" in r.output
    r = invoke("train-heads", "--model", tiny_folder / "model", "--data", rows, "--target", "soft", "--out", tmp_path / "h1")
    assert r.exit_code != 0 and "--target 'soft': use one of greedy, distribution" in r.output


def test_train_heads_on_sampled_answers(tiny_folder, tmp_path):
    """--gen-temperature: answers drawn with the keyed draws (not the greedy text), said so in the README; their pack
    seeds only runs at that temperature; bad values and a dtype that would drop the targets are refused."""
    from medusa_runtime.sampling import SamplingConfig
    from treeopt.distill import read_trajectories

    rows = tmp_path / "prompts.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"w{i} w{i + 2} w{i + 5}"}) + "\n" for i in range(5)))
    common = ("train-heads", "--model", tiny_folder / "model", "--data", rows, "--num-heads", 2, "--epochs", 1, "--batch-size", 16,
              "--max-new-tokens", 8, "--tokens", 100000, "--num-prompts", 3, "--draft-vocab", 0, "--target", "distribution",
              "--mtbench-select", "")
    r = invoke(*common, "--gen-temperature", 1.0, "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    assert invoke(*common, "--out", tmp_path / "g").exit_code == 0
    sampled = read_trajectories(tmp_path / "s" / ".work" / "trajectories.jsonl")
    greedy = read_trajectories(tmp_path / "g" / ".work" / "trajectories.jsonl")
    assert [t.prompt_ids for t in sampled] == [t.prompt_ids for t in greedy] and sampled != greedy
    assert "3 sampled (temperature 1.0, keyed draws) answers" in (tmp_path / "s" / "README.md").read_text()
    from medusa_runtime.models import load_model
    from treeopt.distill import generate_trajectories

    loaded = load_model(str(tiny_folder / "model"), "cpu", "float32")  # the very draws the runtime makes at that seed
    again = generate_trajectories(loaded, [t.prompt_ids for t in sampled], tmp_path / "again.jsonl", 8, batch_size=128,
                                  sampling=SamplingConfig(temperature=1.0, seed=0))
    assert {tuple(t.prompt_ids): t.response_ids for t in again} == {tuple(t.prompt_ids): t.response_ids for t in sampled}
    r = invoke("pack-answers", tmp_path / "s", "--out", tmp_path / "s.npz", "--model", tiny_folder / "model",
               "--gen-dtype", "float32", "--max-new-tokens", 8, "--gen-temperature", 1.0)
    assert r.exit_code == 0, r.output
    r = invoke(*common, "--answers", tmp_path / "s.npz", "--out", tmp_path / "g2")
    assert r.exit_code != 0 and "gen_temperature 1.0 (this run: 0.0; --gen-temperature)" in r.output
    r = invoke(*common, "--gen-temperature", -0.5, "--out", tmp_path / "bad")
    assert r.exit_code != 0 and "--gen-temperature -0.5: must be >= 0" in r.output
    r = invoke(*common, "--gen-temperature", 1.0, "--gen-dtype", "bfloat16", "--out", tmp_path / "bad2")
    assert r.exit_code != 0 and "sampled answers must be written in the training dtype (float32)" in r.output


@pytest.fixture(scope="module")
def batch_latency(tiny_folder, tmp_path_factory):
    latency = tmp_path_factory.mktemp("batch") / "latency.json"
    r = invoke("profile", "--model", tiny_folder / "model", "--heads", tiny_folder / "heads", "--sizes", "1,2,4,8",
               "--repeats", 2, "--context", 16, "--batch-sizes", "2,4", "--out", latency)
    assert r.exit_code == 0, r.output
    return latency


def test_bench_at_a_batch_size_checks_every_row(tiny_folder, tmp_path, stats_file):
    r, _, out = bench_built_tree(tiny_folder, tmp_path, stats_file, "--batch-size", 2)
    report = json.loads(out.read_text())
    assert report["batch_size"] == 2 and report["batches"] == 2 and report["prompts"] == 3
    # 3 prompts in batches of 2: the last batch is filled up with the first prompt again
    assert [(row["batch"], row["index"]) for row in report["per_prompt"]] == [(0, 0), (0, 1), (1, 2), (1, 0)]
    assert report["identical"] == 1.0 and report["baseline_identical"] is not None
    assert "left-padded" in r.output
    assert invoke("bench", "--model", tiny_folder / "model", "--batch-size", 0).exit_code == 2


def test_profile_batches_plan_and_build_for_a_batch_size(tiny_folder, stats_file, batch_latency, tmp_path):
    data = json.loads(batch_latency.read_text())
    assert [b["batch_size"] for b in data["batches"]] == [1, 2, 4]
    plan_json, plan_png = tmp_path / "plan.json", tmp_path / "plan.png"
    r = invoke("plan", stats_file, "--latency", batch_latency, "--out", plan_json, "--png", plan_png)
    assert r.exit_code == 0, r.output
    plan = json.loads(plan_json.read_text())
    assert [row["batch_size"] for row in plan["rows"]] == [1, 2, 4] and plan_png.exists()
    assert json.loads(r.output.strip().splitlines()[-1])["switch_off_batch_size"] == plan["switch_off_batch_size"]
    assert plan["batching"] == "static"
    for row in plan["rows"]:
        assert row["continuous_tokens_per_s"] > 0  # its formula: tests/test_plan.py
        tree = tmp_path / f"b{row['batch_size']}.json"
        r = invoke("build", stats_file, "--budget", "auto", "--latency", batch_latency, "--batch-size", row["batch_size"],
                   "--max-budget", 7, "--out", tree)
        assert r.exit_code == 0, r.output
        meta = json.loads(tree.read_text())["meta"]
        assert meta["batch_size"] == row["batch_size"] and meta["budget"] == row["paths"]
    static_rows = {row["batch_size"]: row for row in plan["rows"]}
    r = invoke("plan", stats_file, "--latency", batch_latency, "--batching", "continuous", "--out", plan_json)
    assert r.exit_code == 0, r.output
    continuous_rows = json.loads(plan_json.read_text())["rows"]
    # planned for in-flight batching: not the static figure at a batch size where rows leave and join
    assert any(row["tokens_per_s"] != static_rows[row["batch_size"]]["tokens_per_s"] for row in continuous_rows if row["batch_size"] > 1)
    for row in continuous_rows:  # and what build predicts for that batch size and batching, through its own call
        tree = tmp_path / f"c{row['batch_size']}.json"
        r = invoke("build", stats_file, "--budget", "auto", "--latency", batch_latency, "--batch-size", row["batch_size"],
                   "--batching", "continuous", "--out", tree)
        assert r.exit_code == 0, r.output
        assert json.loads(tree.read_text())["meta"]["predicted_tokens_per_s"] == pytest.approx(row["tokens_per_s"], rel=1e-3)
    assert invoke("plan", stats_file, "--latency", batch_latency, "--batching", "dynamic").exit_code == 2
    r = invoke("build", stats_file, "--budget", "auto", "--latency", batch_latency, "--batch-size", 8, "--out", tmp_path / "x.json")
    assert r.exit_code == 2 and "no batch size 8 (profiled: 1, 2, 4)" in r.output
    assert invoke("build", stats_file, "--budget", 3, "--batch-size", 2, "--out", tmp_path / "y.json").exit_code == 2


def test_sweep_at_several_batch_sizes(tiny_folder, stats_file, batch_latency, tmp_path):
    out = tmp_path / "sweep.json"
    r = invoke("sweep", stats_file, "--latency", batch_latency, "--budgets", "0,2", "--batch-sizes", "1,2",
               "--model", tiny_folder / "model", "--heads", tiny_folder / "heads", "--prompts", tiny_folder / "prompts.jsonl",
               "--select", "0:3", "--max-new-tokens", 10, "--json", out)
    assert r.exit_code == 0, r.output
    summary = json.loads(out.read_text())
    assert [b["batch_size"] for b in summary["batches"]] == [1, 2]
    for batch in summary["batches"]:
        assert [row["label"] for row in batch["rows"]][0] == "empty" and "budget 2" in [row["label"] for row in batch["rows"]]
        assert all(row["predicted_tokens_per_s"] > 0 and row["batch_size"] == batch["batch_size"] for row in batch["rows"])
        assert batch["identical"] == 1.0 and all(row["identical"] == 1.0 for row in batch["rows"])
        labels = {row["label"] for row in batch["rows"]}  # the planned tree's neighbouring budgets are measured too
        assert {f"budget {n}" for n in (batch["auto_paths"] - 1, batch["auto_paths"] + 1) if n > 0} <= labels
    r = invoke("plan", stats_file, "--latency", batch_latency, "--png", tmp_path / "plan.png", "--measured", out)
    assert r.exit_code == 0, r.output
    r = invoke("plan", stats_file, "--latency", batch_latency, "--png", tmp_path / "plan.png", "--measured", batch_latency)
    assert r.exit_code == 2 and "not a sweep result" in r.output
    # continuous batches: every tree serves the whole queue through the slots, beside the continuous plan's prediction
    r = invoke("sweep", stats_file, "--latency", batch_latency, "--budgets", "2", "--batch-sizes", "2", "--batching", "continuous",
               "--model", tiny_folder / "model", "--heads", tiny_folder / "heads", "--prompts", tiny_folder / "prompts.jsonl",
               "--select", "0:3", "--max-new-tokens", 10, "--json", out)
    assert r.exit_code == 0, r.output
    summary = json.loads(out.read_text())
    assert summary["batching"] == "continuous" and all(row["predicted_tokens_per_s"] > 0 for row in summary["rows"])
    assert summary["rows"][0]["tokens_per_step"] == 1.0 and summary["rows"][1]["tokens_per_step"] > 1.0


def test_pack_answers_then_train_heads_starts_from_them(tiny_folder, tmp_path):
    """Answers generated once, packed, and a second run seeded from the pack generates nothing."""
    rows = tmp_path / "prompts.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"w{i} w{i + 2} w{i + 5}"}) + "\n" for i in range(6)))
    common = ("train-heads", "--model", tiny_folder / "model", "--data", rows, "--num-heads", 2, "--epochs", 1,
              "--batch-size", 16, "--max-new-tokens", 6, "--num-prompts", 6, "--draft-vocab", 0, "--mtbench-select", "")
    first = tmp_path / "first"
    assert invoke(*common, "--out", first).exit_code == 0
    pack = tmp_path / "answers.npz"
    r = invoke("pack-answers", first, "--out", pack, "--model", tiny_folder / "model", "--gen-dtype", "float32", "--max-new-tokens", 6)
    assert r.exit_code == 0, r.output
    assert "6 answers" in r.output
    second = tmp_path / "second"
    r = invoke(*common, "--answers", pack, "--out", second)
    assert r.exit_code == 0, r.output
    assert "answers: 6 of the 6" in r.output
    assert (second / ".work" / "trajectories.jsonl").read_text() == (first / ".work" / "trajectories.jsonl").read_text()
    r = invoke(*common, "--answers", pack, "--max-new-tokens", 7, "--out", tmp_path / "third")
    assert r.exit_code != 0 and "max_new_tokens 6 (this run: 7; --max-new-tokens)" in r.output
    r = invoke("pack-answers", tmp_path / "nowhere", "--out", pack, "--gen-dtype", "float32")
    assert r.exit_code != 0 and "no such file" in r.output


def test_heads_with_context_lookup_through_the_cli(tiny_folder, tmp_path):
    """calibrate records the lookup (and fingerprints it), bench runs it losslessly, export warns that engines
    do not do it."""
    import shutil

    heads = tmp_path / "heads_lookup"
    shutil.copytree(tiny_folder / "heads", heads)
    config = json.loads((heads / "config.json").read_text())
    config["medusa_context_lookup"] = {"min_match": 1, "max_match": 3}
    (heads / "config.json").write_text(json.dumps(config))
    stats, tree, report = tmp_path / "stats.json", tmp_path / "tree.json", tmp_path / "report.json"
    r = invoke("calibrate", "--model", tiny_folder / "model", "--heads", heads, "--prompts", tiny_folder / "prompts.jsonl",
               "--max-new-tokens", 24, "--topk", 4, "--out", stats)
    assert r.exit_code == 0, r.output
    provenance = json.loads(stats.read_text())["provenance"]
    assert provenance["context_lookup"] == {"min_match": 1, "max_match": 3}
    from treeopt.calibration import heads_fingerprint

    assert provenance["heads_sha256"] == heads_fingerprint(heads) != heads_fingerprint(tiny_folder / "heads")
    assert invoke("build", stats, "--budget", 4, "--out", tree).exit_code == 0
    r = invoke("bench", "--model", tiny_folder / "model", "--heads", heads, "--tree", tree, "--prompts",
               tiny_folder / "prompts.jsonl", "--select", "0:3", "--max-new-tokens", 16, "--json", report)
    assert r.exit_code == 0, r.output
    assert json.loads(report.read_text())["identical"] == 1.0 and "warning" not in r.output
    r = invoke("export", tree, "--format", "trtllm")
    assert r.exit_code == 0 and "context lookup" in r.output


def test_sampled_calibrate_build_bench_and_their_warnings(tiny_folder, stats_file, tmp_path):
    """calibrate --temperature records the settings, build carries them, bench at those settings is lossless and
    silent, and bench at other settings (or a greedy tree at T > 0) warns; bad settings are one-line errors."""
    model, heads, prompts = tiny_folder / "model", tiny_folder / "heads", tiny_folder / "prompts.jsonl"
    stats, tree, report = tmp_path / "s07.json", tmp_path / "t07.json", tmp_path / "r.json"
    r = invoke("calibrate", "--model", model, "--heads", heads, "--prompts", prompts, "--max-new-tokens", 24, "--topk", 4,
               "--temperature", 0.7, "--top-p", 0.9, "--seed", 3, "--out", stats)
    assert r.exit_code == 0, r.output
    assert "temperature 0.7, top-p 0.9" in r.output
    settings = {"temperature": 0.7, "top_k": 0, "top_p": 0.9, "seed": 3}
    assert json.loads(stats.read_text())["provenance"]["sampling"] == settings
    assert invoke("build", stats, "--budget", 4, "--out", tree).exit_code == 0
    assert json.loads(tree.read_text())["meta"]["sampling"] == settings
    common = ("--model", model, "--heads", heads, "--prompts", prompts, "--select", "0:3", "--max-new-tokens", 24)
    r = invoke("bench", *common, "--tree", tree, "--temperature", 0.7, "--top-p", 0.9, "--seed", 3, "--json", report)
    assert r.exit_code == 0, r.output
    assert "warning" not in r.output and "acceptance: sample (lossless)" in r.output
    out = json.loads(report.read_text())
    assert out["identical"] == 1.0 and out["acceptance"] == "sample" and out["lossless"] and out["top_p"] == 0.9
    # same seed: the replay of the calibration is what the runtime did, prompt for prompt
    from treeopt.stats import load_stats, replay_per_prompt, subset

    replayed = replay_per_prompt(subset(load_stats(stats), [0, 1, 2]), [tuple(p) for p in json.loads(tree.read_text())["paths"]])
    assert [(r["new_tokens"], r["steps"]) for r in out["per_prompt"]] == replayed
    r = invoke("bench", *common, "--tree", tree, "--temperature", 1.0)
    assert r.exit_code == 0 and "calibrated at temperature 0.7, top-p 0.9 but runs at temperature 1" in r.output
    assert "--temperature 1" in r.output
    greedy_tree = tmp_path / "greedy.json"
    assert invoke("build", stats_file, "--budget", 4, "--out", greedy_tree).exit_code == 0
    r = invoke("bench", *common, "--tree", greedy_tree, "--temperature", 0.7, "--acceptance", "typical", "--json", report)
    assert r.exit_code == 0 and "calibrated at greedy" in r.output and "LOSSY" in r.output
    assert json.loads(report.read_text())["lossless"] is False
    for bad, option in ((("--temperature", -1), "--temperature"), (("--temperature", 1, "--top-p", 0), "--top-p"),
                        (("--temperature", 1, "--top-k", -2), "--top-k"), (("--acceptance", "typical"), "--acceptance typical")):
        r = invoke("bench", *common, *bad)
        assert r.exit_code == 2 and option in r.output and len(r.output.strip().splitlines()) == 1, r.output
    r = invoke("calibrate", "--model", model, "--heads", heads, "--out", tmp_path / "x.json", "--temperature", 1, "--top-p", 2)
    assert r.exit_code == 2 and "--top-p" in r.output and not (tmp_path / "x.json").exists()


def test_coupled_drafts_from_calibration_to_bench_and_their_warnings(tiny_folder, stats_file, tmp_path):
    """calibrate at T > 0 ranks coupled drafts and fits their head temperature; the tree carries it and bench drafts
    with it (lossless, silent, the replay's steps); bench with mode drafts warns; bad draft options are one line."""
    model, heads, prompts = tiny_folder / "model", tiny_folder / "heads", tiny_folder / "prompts.jsonl"
    stats, tree, report = tmp_path / "c.json", tmp_path / "tc.json", tmp_path / "r.json"
    answers = tmp_path / "answers.jsonl"
    calibrate = ("calibrate", "--model", model, "--heads", heads, "--prompts", prompts, "--max-new-tokens", 24, "--topk", 4,
                 "--temperature", 1.0, "--seed", 2, "--answers", answers)
    r = invoke(*calibrate, "--out", stats)
    assert r.exit_code == 0, r.output
    assert "coupled drafts (head temperature" in r.output and "head temperature fitted on these prompts" in r.output
    kept = answers.read_text()
    r = invoke(*calibrate, "--drafts", "mode", "--out", tmp_path / "mode.json")  # the same rollouts, ranked by the logits
    assert r.exit_code == 0 and answers.read_text() == kept and "mode drafts" in r.output, r.output
    mode = json.loads((tmp_path / "mode.json").read_text())
    assert mode["new_tokens"] == json.loads(stats.read_text())["new_tokens"] and mode["provenance"]["drafts"] == {"rule": "mode"}
    r = invoke(*calibrate[:-6], "--temperature", 0.5, "--answers", answers, "--out", tmp_path / "x.json")
    assert r.exit_code == 2 and "--answers" in r.output and "delete this one" in r.output
    drafts = json.loads(stats.read_text())["provenance"]["drafts"]
    assert drafts["rule"] == "coupled" and drafts["fit"]["grid"]
    assert invoke("build", stats, "--budget", 4, "--out", tree).exit_code == 0
    common = ("--model", model, "--heads", heads, "--prompts", prompts, "--max-new-tokens", 24, "--tree", tree)
    r = invoke("bench", *common, "--temperature", 1.0, "--seed", 2, "--json", report)
    assert r.exit_code == 0 and "warning" not in r.output and "coupled drafts (head temperature" in r.output, r.output
    out = json.loads(report.read_text())
    assert out["identical"] == 1.0 and out["drafts"] == {k: drafts[k] for k in ("rule", "head_temperature")}
    from treeopt.stats import load_stats, replay_per_prompt

    replayed = replay_per_prompt(load_stats(stats), [tuple(p) for p in json.loads(tree.read_text())["paths"]])
    assert [(p["new_tokens"], p["steps"]) for p in out["per_prompt"]] == replayed
    r = invoke("bench", *common, "--temperature", 1.0, "--seed", 2, "--drafts", "mode", "--json", report)
    assert r.exit_code == 0 and "ranked with coupled drafts" in r.output and "runs with mode drafts" in r.output
    assert json.loads(report.read_text())["identical"] == 1.0 and json.loads(report.read_text())["drafts"] == {"rule": "mode"}
    r = invoke("bench", "--model", model, "--heads", heads, "--prompts", prompts, "--select", "0:1", "--max-new-tokens", 4,
               "--drafts", "coupled")
    assert r.exit_code == 0 and "--drafts coupled has no effect at --temperature 0" in r.output
    for bad in (("--head-temperature", 0), ("--head-temperature", "hot"), ("--drafts", "best")):
        r = invoke("bench", *common, "--temperature", 1.0, *bad)
        assert r.exit_code == 2 and bad[0] in r.output and len(r.output.strip().splitlines()) == 1, r.output
    r = invoke("calibrate", "--model", model, "--heads", heads, "--prompts", prompts, "--temperature", 1.0, "--shard", "0/2",
               "--out", tmp_path / "x.json")
    assert r.exit_code == 2 and "--head-temperature" in r.output and not (tmp_path / "x.json").exists()


def test_generate_samples_with_a_seed(tiny_folder):
    common = ("generate", "w1 w2 w3", "--model", tiny_folder / "model", "--heads", tiny_folder / "heads", "--max-new-tokens", 8)
    runs = [invoke(*common, "--temperature", 1.0, "--seed", seed) for seed in (1, 1, 2)]
    texts = [r.output.rsplit("[", 1)[0].rsplit("]", 1)[-1] for r in runs]  # the streamed text, between progress bar and summary
    assert all(r.exit_code == 0 for r in runs) and texts[0] == texts[1] != texts[2]
    a = runs[0]
    assert "sample acceptance" in a.output


def test_calibrate_for_an_engine_then_build_and_export_without_warnings(tiny_folder, tmp_path):
    """Plain heads calibrated as TensorRT-LLM runs them export silently; the same heads with a context lookup and a
    draft vocabulary, calibrated as treeopt runs them, export with a warning naming both; sequential heads are refused
    by --engine in one line, and nothing is written."""
    import shutil

    from conftest import tiny_heads
    from transformers import AutoModelForCausalLM

    model, prompts = tiny_folder / "model", tiny_folder / "prompts.jsonl"
    stats, tree, report = tmp_path / "trt.json", tmp_path / "trt_tree.json", tmp_path / "r.json"
    r = invoke("calibrate", "--model", model, "--heads", tiny_folder / "heads", "--prompts", prompts, "--max-new-tokens", 24,
               "--topk", 4, "--engine", "trtllm", "--out", stats)
    assert r.exit_code == 0, r.output
    provenance = json.loads(stats.read_text())["provenance"]
    assert provenance["engine"] == "trtllm" and provenance["head_kind"] == "plain" and provenance["draft_vocab"] is None
    r = invoke("build", stats, "--budget", 5, "--for", "trtllm", "--out", tree)
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    r = invoke("export", tree, "--format", "trtllm-llmapi", "--out", tmp_path / "t.yaml")
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    # bench as the engine runs the heads: lossless, and the replay of the engine's stats is what it measures
    r = invoke("bench", "--model", model, "--heads", tiny_folder / "heads", "--tree", tree, "--prompts", prompts,
               "--max-new-tokens", 24, "--engine", "trtllm", "--json", report)
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    out = json.loads(report.read_text())
    assert out["identical"] == 1.0 and out["draft_vocab"] is None and out["engine"] == "trtllm"
    from treeopt.stats import load_stats, replay_steps

    assert replay_steps(load_stats(stats), [tuple(p) for p in json.loads(tree.read_text())["paths"]]) == (
        sum(p["new_tokens"] for p in out["per_prompt"]), sum(p["steps"] for p in out["per_prompt"]))
    # the same tree benched as treeopt runs the heads: another engine, a warning
    r = invoke("bench", "--model", model, "--heads", tiny_folder / "heads", "--tree", tree, "--prompts", prompts, "--select", "0:1",
               "--max-new-tokens", 8)
    assert r.exit_code == 0 and "'engine': 'trtllm'" in r.output

    # heads with a lookup and a draft vocabulary, calibrated as treeopt runs them: export names what the engine lacks
    lookup = tmp_path / "lookup_heads"
    shutil.copytree(tiny_folder / "heads", lookup)
    config = json.loads((lookup / "config.json").read_text())
    (lookup / "config.json").write_text(json.dumps({**config, "medusa_context_lookup": {"min_match": 1, "max_match": 3}}))
    (lookup / "draft_vocab.json").write_text(json.dumps({"format": "medusa-draft-vocab", "version": 1, "tokens": list(range(1, 64, 2))}))
    ours, ours_tree = tmp_path / "ours.json", tmp_path / "ours_tree.json"
    assert invoke("calibrate", "--model", model, "--heads", lookup, "--prompts", prompts, "--max-new-tokens", 12, "--topk", 4,
                  "--out", ours).exit_code == 0
    r = invoke("build", ours, "--budget", 5, "--for", "trtllm", "--out", ours_tree)
    assert r.exit_code == 0 and "TensorRT-LLM runs plain Medusa heads" in r.output
    r = invoke("export", ours_tree, "--format", "trtllm-llmapi")
    assert r.exit_code == 0 and "context lookup" in r.output and "draft vocabulary of 32 tokens" in r.output
    assert "--engine trtllm" in r.output
    r = invoke("build", ours, "--budget", 5, "--for", "medusa", "--out", tmp_path / "m.json")
    assert r.exit_code == 0 and "upstream Medusa runs plain Medusa heads" in r.output
    assert "warning" not in invoke("export", ours_tree, "--format", "json").output  # the spec itself: no engine

    # sequential heads: the engine cannot run them
    seq = tmp_path / "seq_heads"
    tiny_heads(AutoModelForCausalLM.from_pretrained(model), sequential=True).save(seq)
    r = invoke("calibrate", "--model", model, "--heads", seq, "--prompts", prompts, "--engine", "trtllm", "--out", tmp_path / "no.json")
    assert r.exit_code == 2 and not (tmp_path / "no.json").exists()
    error = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "sequential heads" in error[0] and "--kind plain" in error[0]


def test_bench_continuous_batching_runs_four_arms_losslessly(tiny_folder, stats_file, tmp_path):
    model, heads, prompts = tiny_folder / "model", tiny_folder / "heads", tiny_folder / "prompts.jsonl"
    tree, report = tmp_path / "tree.json", tmp_path / "serve.json"
    assert invoke("build", stats_file, "--budget", 4, "--out", tree).exit_code == 0
    common = ("bench", "--model", model, "--heads", heads, "--tree", tree, "--prompts", prompts, "--batching", "continuous")
    r = invoke(*common, "--batch-size", 2, "--max-new-tokens", 16, "--min-new-tokens", 3, "--json", report)
    assert r.exit_code == 0, r.output
    out = json.loads(report.read_text())
    assert [a["arm"] for a in out["arms"]] == ["medusa continuous", "plain continuous", "medusa static", "hf static"]
    assert [a["bookkeeping_s"] is None for a in out["arms"]] == [False, False, False, True]  # HF does not say
    assert all(a["identical"] == 1.0 for a in out["arms"]) and out["prompts"] == 4
    assert len(set(out["max_new_tokens"])) > 1 and all(3 <= n <= 16 for n in out["max_new_tokens"])
    assert all(a["latency_median_s"] <= a["latency_p90_s"] and a["ttft_median_s"] <= a["latency_median_s"] for a in out["arms"])
    r = invoke(*common, "--batch-size", 2, "--max-new-tokens", 8, "--temperature", 0.9, "--json", report)
    assert r.exit_code == 0 and json.loads(report.read_text())["arms"][0]["identical"] == 1.0
    for options, message in ((("--batch-size", 5), "larger than the queue of 4"), (("--batch-size", 0), "--batch-size 0"),
                             (("--select", "0:0"), "the selection is empty"), (("--min-new-tokens", 200), "--min-new-tokens 200"),
                             (("--max-new-tokens", 10 ** 6), "exceeds the model's context")):
        r = invoke(*common, *options)
        errors = [line for line in r.output.splitlines() if line.startswith("error:")]
        assert r.exit_code == 2 and len(errors) == 1 and message in errors[0], r.output


def test_vllm_chain_calibrated_built_exported_and_benched(tiny_folder, tmp_path):
    """calibrate --engine vllm keeps the heads' draft vocabulary (vLLM's token_map); build --for vllm writes the chain
    whose prediction is the chain's replay; export-heads and export --format vllm write what vLLM loads, without a
    warning; bench --engine vllm measures the replay, losslessly; sequential heads are refused in one line, nothing
    written."""
    import shutil

    from conftest import tiny_heads
    from transformers import AutoModelForCausalLM

    from treeopt.stats import load_stats, replay_steps, replay_tokens_per_step

    model, prompts = tiny_folder / "model", tiny_folder / "prompts.jsonl"
    heads = tmp_path / "heads"
    shutil.copytree(tiny_folder / "heads", heads)
    (heads / "draft_vocab.json").write_text(json.dumps({"format": "medusa-draft-vocab", "version": 1, "tokens": list(range(2, 64))}))
    stats, tree, report = tmp_path / "v.json", tmp_path / "chain.json", tmp_path / "r.json"
    r = invoke("calibrate", "--model", model, "--heads", heads, "--prompts", prompts, "--max-new-tokens", 24, "--topk", 4,
               "--engine", "vllm", "--out", stats)
    assert r.exit_code == 0, r.output
    provenance = json.loads(stats.read_text())["provenance"]
    assert provenance["engine"] == "vllm" and provenance["draft_vocab"] == 62
    r = invoke("build", stats, "--budget", 2, "--for", "vllm", "--out", tree)
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    spec = json.loads(tree.read_text())
    assert spec["paths"] == [[0], [0, 0]]
    assert spec["meta"]["expected_tokens_per_step"] == pytest.approx(replay_tokens_per_step(load_stats(stats), [(0,), (0, 0)]), abs=1e-4)
    # the checkpoint and the speculative_config
    out = tmp_path / "vllm_heads"
    r = invoke("export-heads", heads, "--format", "vllm", "--model", model, "--out", out)
    assert r.exit_code == 0 and "3 heads (62 of 64 tokens)" in r.output, r.output
    r = invoke("export", tree, "--format", "vllm", "--heads-dir", out)
    assert r.exit_code == 0 and "warning" not in r.output and "note:" not in r.output, r.output
    assert json.loads(r.output) == {"method": "medusa", "model": str(out.resolve()), "num_speculative_tokens": 2}
    # bench as vLLM runs the heads: the replay of the stats is what it measures
    r = invoke("bench", "--model", model, "--heads", heads, "--tree", tree, "--prompts", prompts, "--max-new-tokens", 24,
               "--engine", "vllm", "--json", report)
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    measured = json.loads(report.read_text())
    assert measured["identical"] == 1.0 and measured["engine"] == "vllm" and measured["draft_vocab"] == 62
    assert replay_steps(load_stats(stats), [(0,), (0, 0)]) == (sum(p["new_tokens"] for p in measured["per_prompt"]),
                                                               sum(p["steps"] for p in measured["per_prompt"]))
    # a tree with ranks > 0 is not what vLLM runs; sequential heads are not either
    wide = tmp_path / "wide.json"
    assert invoke("build", stats, "--budget", 3, "--out", wide).exit_code == 0
    r = invoke("export", wide, "--format", "vllm", "--heads-dir", out)
    assert r.exit_code == 2 and "ranks < 1" in r.output
    seq = tmp_path / "seq_heads"
    tiny_heads(AutoModelForCausalLM.from_pretrained(model), sequential=True).save(seq)
    r = invoke("export-heads", seq, "--format", "vllm", "--model", model, "--out", tmp_path / "no")
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert r.exit_code == 2 and len(errors) == 1 and "sequential heads" in errors[0] and not (tmp_path / "no").exists()
