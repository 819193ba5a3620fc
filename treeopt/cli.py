"""The ``treeopt`` command line (typer): each command parses its options, calls one function and prints.

Options, loading and the one-line errors the commands share are in ``cli_inputs.py``.
Commands that need a model import torch lazily inside the command, so that ``build``, ``evaluate``,
``export``, ``import`` and ``show`` start in a fraction of a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from medusa_runtime.sampling import SamplingConfig, SamplingError

from .builder import DEFAULT_OBJECTIVE
from .cli_trees import evaluate, export, import_cmd, show
from .cli_heads import export_heads, mix_heads_cmd, pack_answers_cmd, train_heads_cmd
from .cli_inputs import (AcceptanceOpt, AlphaOpt, BatchingOpt, DeviceOpt, DraftsOpt, DtypeOpt, EngineOpt,
                         HeadsOpt, HeadTemperatureOpt, ModelOpt, PromptsOpt, SeedOpt, SelectOpt, TemperatureOpt, ThresholdOpt,
                         TopKOpt, TopPOpt, command_line, drafts_of_tree, fail, load_everything,
                         load_latency_batches_or_fail, load_prompt_ids, load_runtime, load_stats_or_fail,
                         parse_int_list, sampling_or_fail, warn_for_engine, warn_if_built_for_other_heads,
                         warn_if_calibrated_for_other_sampling, write_output)
from .crossval import DEFAULT_FOLDS
from .design import DEFAULT_MAX_BUDGET
from .admission import BATCHING
from .tuning import PROFILE_SIZES

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Calibrate Medusa heads, build the optimal tree for your device, export it, and benchmark it.")


# --------------------------------------------------------------------------- runtime commands
@app.command()
def generate(
    prompt: str = typer.Argument(..., help="the user message (chat template applied when the model has one)"),
    model: str = ModelOpt,
    heads: Optional[str] = HeadsOpt,
    tree: Optional[Path] = typer.Option(None, "--tree", help="tree spec JSON (default: plain decoding)"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    temperature: float = TemperatureOpt,
    top_k: int = TopKOpt,
    top_p: float = TopPOpt,
    seed: int = SeedOpt,
    acceptance: Optional[str] = AcceptanceOpt,
    posterior_threshold: float = ThresholdOpt,
    posterior_alpha: float = AlphaOpt,
    oracle: bool = typer.Option(False, "--oracle", help="guesses from the base model's own run (greedy, or keyed sampling): a ceiling"),
    drafts: Optional[str] = DraftsOpt,
    head_temperature: Optional[str] = HeadTemperatureOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """Generate an answer with Medusa tree decoding, streaming the text."""
    import time

    from medusa_runtime.hf_decode import hf_reference
    from medusa_runtime.decoding import MedusaDecoder, PromptTooLongError
    from medusa_runtime.prompts import render_chat

    sampling = sampling_or_fail(temperature, top_k, top_p, seed, acceptance, posterior_threshold, posterior_alpha, drafts, head_temperature)
    loaded, medusa_heads, _, spec = load_runtime(model, heads, tree, oracle, dtype, device)
    sampling = drafts_of_tree(spec, sampling, str(tree))
    ids = render_chat(loaded.tokenizer, prompt)
    decoder = MedusaDecoder(loaded.model, None if oracle else medusa_heads, spec, loaded.eos_token_ids, sampling)
    reference = hf_reference(loaded.model, ids, max_new_tokens, loaded.eos_token_ids, sampling) if oracle else None
    emitted: list[int] = []
    shown = [""]

    def stream(tokens: list[int]) -> None:
        emitted.extend(tokens)
        text = loaded.tokenizer.decode(emitted, skip_special_tokens=True)
        typer.echo(text[len(shown[0]):], nl=False)
        shown[0] = text

    t0 = time.perf_counter()
    try:
        result = decoder.generate(ids, max_new_tokens, oracle=reference, on_tokens=stream)
    except PromptTooLongError as err:
        fail(str(err))
    seconds = time.perf_counter() - t0
    typer.echo("")
    typer.secho(f"[{len(result.tokens)} tokens in {result.steps} steps: {result.tokens_per_step:.2f} tokens/step, "
                f"{len(result.tokens) / seconds:.1f} tokens/s, {spec.nodes}-node tree, {sampling.rule} acceptance, "
                f"{sampling.draft_rule} drafts, "
                f"stop: {result.stop_reason}]", err=True, fg=typer.colors.BLUE)


@app.command()
def bench(
    model: str = ModelOpt,
    heads: Optional[str] = HeadsOpt,
    tree: Optional[Path] = typer.Option(None, "--tree", help="tree spec JSON (default: plain decoding, the empty tree)"),
    oracle: bool = typer.Option(False, "--oracle", help="guesses from the base model's own run (greedy, or keyed sampling): a ceiling"),
    prompts: str = PromptsOpt,
    select: Optional[str] = SelectOpt,
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    temperature: float = TemperatureOpt,
    top_k: int = TopKOpt,
    top_p: float = TopPOpt,
    seed: int = SeedOpt,
    acceptance: Optional[str] = AcceptanceOpt,
    posterior_threshold: float = ThresholdOpt,
    posterior_alpha: float = AlphaOpt,
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the report here"),
    batch_size: int = typer.Option(1, "--batch-size", help="prompts decoded together, by both HF generate (left-padded) "
                                   "and the runtime; the last batch is filled up with the first prompts again"),
    engine: Optional[str] = EngineOpt,
    batching: str = typer.Option("static", "--batching", help="static: batches of --batch-size prompts, HF generate vs the "
                                 "runtime batch by batch | continuous: the prompts as one queue through --batch-size slots, "
                                 "refilled as requests finish (runtime with the tree, without it, its static batches, HF's)"),
    min_new_tokens: Optional[int] = typer.Option(None, "--min-new-tokens", help="with --batching continuous: each request's "
                                                 "token limit is drawn from [this, --max-new-tokens] (default: all the same)"),
    rounds: int = typer.Option(1, "--rounds", help="with --batching continuous: times the queue runs through each arm"),
    drafts: Optional[str] = DraftsOpt,
    head_temperature: Optional[str] = HeadTemperatureOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """HF generate vs the Medusa runtime on the same prompts (greedy, or sampling with the same settings): speed,
    tokens/step, and every row checked token for token against its reference decode."""
    from medusa_runtime.bench import format_report, report_json_line, run_bench
    from medusa_runtime.decoding import PromptTooLongError

    if batch_size < 1:
        fail(f"--batch-size {batch_size}: use an integer >= 1")
    sampling = sampling_or_fail(temperature, top_k, top_p, seed, acceptance, posterior_threshold, posterior_alpha, drafts, head_temperature)
    loaded, medusa_heads, heads_path, spec = load_runtime(model, heads, tree, oracle, dtype, device, engine)
    warn_if_built_for_other_heads(spec, model, heads_path if not oracle else None, str(tree), engine)
    if not oracle:
        warn_if_calibrated_for_other_sampling(spec, sampling, str(tree))
        sampling = drafts_of_tree(spec, sampling, str(tree))
    planned_for = spec.meta.get("batch_size") if spec.meta.get("budget_auto") else None
    if planned_for is not None and planned_for != batch_size:
        typer.secho(f"note: {tree} was sized for batch size {planned_for}, benchmarked at {batch_size}", err=True, fg=typer.colors.YELLOW)
    ids = load_prompt_ids(loaded, prompts, select)
    if batching == "continuous":
        return bench_served(loaded, None if oracle else medusa_heads, spec, ids, max_new_tokens, min_new_tokens, batch_size,
                            sampling, rounds, json_out, oracle)
    if batching != "static":
        fail(f"--batching {batching!r}: use static or continuous")
    try:
        report = run_bench(loaded, None if oracle else medusa_heads, spec, ids, max_new_tokens, oracle, sampling, batch_size=batch_size)
    except PromptTooLongError as err:
        fail(str(err))
    report.model, report.heads, report.tree = model, None if oracle else heads_path, str(tree) if tree else None
    report.prompt_source, report.select, report.engine = prompts, select, None if oracle else engine
    typer.echo(format_report(report))
    if json_out:
        write_output(json_out, json.dumps(report.to_json(), indent=1) + "\n")
    typer.echo(report_json_line(report))


def bench_served(loaded, heads, spec, ids, max_new_tokens: int, min_new_tokens: Optional[int], batch_size: int, sampling,
                 rounds: int, json_out: Optional[Path], oracle: bool) -> None:
    """bench --batching continuous: the queue through --batch-size slots, four arms (serve_bench.py)."""
    from medusa_runtime.decoding import PromptTooLongError
    from medusa_runtime.serve_bench import format_serve_report, request_limits, run_serve_bench, serve_json_line

    if oracle:
        fail("--oracle is for static batches; leave it out with --batching continuous")
    if rounds < 1:
        fail(f"--rounds {rounds}: use an integer >= 1")
    try:
        limits = request_limits(len(ids), min_new_tokens or max_new_tokens, max_new_tokens)
        report = run_serve_bench(loaded, heads, spec, ids, limits, batch_size, sampling, rounds)
    except (ValueError, PromptTooLongError) as err:
        fail(str(err))
    report.predicted_tokens_per_s = spec.planned_tokens_per_s(batch_size, "continuous")
    typer.echo(format_serve_report(report))
    if json_out:
        write_output(json_out, json.dumps(report.to_json(), indent=1) + "\n")
    typer.echo(serve_json_line(report))


# --------------------------------------------------------------------------- calibration and trees
@app.command()
def calibrate(
    out: Path = typer.Option(..., "--out", help="stats JSON to write"),
    model: str = ModelOpt,
    heads: Optional[str] = HeadsOpt,
    prompts: str = PromptsOpt,
    select: Optional[str] = SelectOpt,
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    topk: int = typer.Option(10, "--topk", help="ranks recorded per head"),
    rollout: str = typer.Option("batched", "--rollout", help="batched (HF generate on batches: fast) | runtime (exact, one by one)"),
    temperature: float = typer.Option(0.0, "--temperature", help="calibrate for sampling at this temperature (0: greedy): "
                                      "rollouts are sampled with the runtime's keyed draws"),
    top_k: int = TopKOpt,
    top_p: float = TopPOpt,
    seed: int = SeedOpt,
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: calibrate only shard I of N (numbered from 0); "
                                        "merge the N outputs with 'treeopt merge-stats'"),
    engine: Optional[str] = EngineOpt,
    drafts: Optional[str] = DraftsOpt,
    head_temperature: Optional[str] = HeadTemperatureOpt,
    answers: Optional[Path] = typer.Option(None, "--answers", help="JSONL file that keeps the rollouts: an interrupted run "
                                           "resumes, and another --drafts rule reuses the same text"),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """Roll out the base model (greedy, or sampled at --temperature) and measure each head's rank-r accuracy and the
    joint path statistics."""
    from medusa_runtime.sampling import describe_drafts

    from .calibration import ROLLOUT_BATCH, ShardError, calibrate as run_calibration, parse_shard, shard_prompts, stats_provenance

    if topk < 1:
        fail(f"--topk {topk}: must be >= 1")
    sampling = sampling_or_fail(temperature, top_k, top_p, seed, drafts=drafts, head_temperature=head_temperature)
    if shard and sampling.draft_rule == "coupled" and sampling.head_temperature is None:
        fail("--shard with coupled drafts: the head temperature is fitted on all prompts at once; pass --head-temperature "
             "(e.g. what a calibration of all prompts chose) or --drafts mode")
    try:
        shard_index, shard_count = parse_shard(shard) if shard else (0, 1)
    except ShardError as err:
        fail(str(err))
    loaded, medusa_heads, heads_path = load_everything(model, heads, dtype, device, need_heads=True, engine=engine)
    ids = load_prompt_ids(loaded, prompts, select)
    provenance = stats_provenance(medusa_heads, heads_path, prompts, select, len(ids), sampling, command_line(), engine)
    indices = list(range(len(ids)))
    if shard:
        indices = shard_prompts(len(ids), shard_index, shard_count)
        provenance["shard"] = [shard_index, shard_count]
        if not indices:
            fail(f"--shard {shard}: no prompts fall in this shard ({len(ids)} prompts in blocks of {ROLLOUT_BATCH}); "
                 f"use fewer shards")
    try:
        stats = run_calibration(loaded, medusa_heads, [ids[i] for i in indices], max_new_tokens, topk, provenance,
                                rollout=rollout, prompt_indices=indices, sampling=sampling, answers=answers)
    except ValueError as err:
        fail(str(err))
    out.parent.mkdir(parents=True, exist_ok=True)
    stats.save(out)
    acc = stats.accuracy()
    typer.echo(f"{stats.positions} positions from {len(indices)} prompts ({sampling.describe()}, "
               f"{describe_drafts(stats.provenance['drafts'])}); top-1 accuracy per head: " + " ".join(f"{a[0]:.3f}" for a in acc))
    fit = stats.provenance["drafts"].get("fit")
    if "not_fitted" in stats.provenance["drafts"]:
        typer.secho(f"note: head temperature not fitted ({stats.provenance['drafts']['not_fitted']}): the sampling "
                    f"temperature is used", err=True, fg=typer.colors.YELLOW)
    if fit:
        typer.echo(f"head temperature fitted on these prompts ({'one per head' if fit['per_head'] else 'one for all heads'}; "
                   f"held-out tokens/step one {fit['held_out']['one']:.4f}, per head {fit['held_out']['per_head']:.4f})")
    if stats.num_heads > 1:
        typer.echo("P(head k right | heads before it right), rank 0 along the path, k = 2..: "
                   + " ".join(f"{c:.3f}" for c in stats.chain_conditionals()))
    typer.echo(f"stats written to {out}" + (f" (shard {shard_index}/{shard_count}: merge with 'treeopt merge-stats')" if shard else ""))


@app.command("merge-stats")
def merge_stats(
    shards: list[Path] = typer.Argument(..., metavar="SHARD...", help="stats JSON of every 'calibrate --shard I/N' job"),
    out: Path = typer.Option(..., "--out", help="merged stats JSON to write"),
):
    """Merge the stats of sharded calibration jobs into the stats of one run over all prompts (exactly)."""
    from .stats import StatsError, merge_shards

    try:
        merged = merge_shards([(str(path), load_stats_or_fail(path)) for path in shards])
    except StatsError as err:
        fail(str(err))
    out.parent.mkdir(parents=True, exist_ok=True)
    merged.save(out)
    typer.echo(f"{merged.positions} positions from {len(merged.rollouts)} prompts in {len(shards)} shards; stats written to {out}")


@app.command()
def build(
    stats_file: Path = typer.Argument(..., metavar="STATS", help="stats JSON from 'treeopt calibrate'"),
    budget: str = typer.Option(..., "--budget", help="paths in the tree (nodes - 1), or 'auto' with --latency"),
    out: Path = typer.Option(..., "--out", help="tree spec JSON to write"),
    max_depth: Optional[int] = typer.Option(None, "--max-depth", help="default: every head the stats measured"),
    max_children: Optional[int] = typer.Option(None, "--max-children", help="ranks < C at every node (default: --topk of the stats)"),
    objective: str = typer.Option(DEFAULT_OBJECTIVE, "--objective", help="shrunk (path frequencies shrunk towards the "
                                  "per-head accuracies, strength by cross-validation) | empirical (raw path frequencies) | "
                                  "independent (product of a[k][r])"),
    target: Optional[str] = typer.Option(None, "--for", help="medusa | trtllm | vllm: build only trees that engine runs as "
                                         "they are (its rank limit; trtllm: siblings ranked 0..k-1; vllm: a chain of rank 0)"),
    folds: int = typer.Option(DEFAULT_FOLDS, "--folds", help="cross-validation folds over prompts for the prediction "
                              "and the shrinkage strength (0: in-sample replay, no cross-validation)"),
    latency: Optional[Path] = typer.Option(None, "--latency", help="latency JSON from 'treeopt profile': --budget auto picks the "
                                           "size with the most predicted tokens/s; any budget gets its predicted tokens/s"),
    max_budget: int = typer.Option(DEFAULT_MAX_BUDGET, "--max-budget", help="largest budget --budget auto considers"),
    png: Optional[Path] = typer.Option(None, "--png", help="with --latency: plot the predicted curves"),
    batch_size: int = typer.Option(1, "--batch-size", help="with --latency: the batch size to serve (its latency rows "
                                   "must be in the profile: treeopt profile --batch-sizes); the size is 'treeopt plan''s"),
    batching: str = BatchingOpt,
):
    """Build the tree that maximises expected accepted tokens per step (provably optimal for its budget)."""
    from .builder import BuildError
    from .choice import Serving, choose_tree
    from .design import TreeRequest

    auto = budget.strip().lower() == "auto"
    if not auto and not budget.strip().isdigit():
        fail(f"--budget {budget!r}: an integer number of paths, or 'auto'")
    if batch_size > 1 and latency is None:
        fail("--batch-size is the batch size the prediction (and with --budget auto, the size) is for; use it with --latency")
    stats = load_stats_or_fail(stats_file)
    if target is not None:
        warn_for_engine(str(stats_file), stats.provenance, target)
    lat = load_latency_batches_or_fail(latency, batch_size) if latency is not None else None
    request = TreeRequest(None if auto else int(budget), objective, max_depth, max_children, target, folds, max_budget)
    sources = {"stats_file": str(stats_file), **({"latency_file": str(latency)} if latency is not None else {})}
    try:
        choice = choose_tree(stats, request, lat, Serving(batch_size, batching), sources)
    except (BuildError, ValueError) as err:
        fail(str(err))
    if choice.rates:
        typer.echo(choice.table())
    if png and choice.rates:
        from .viz import curve_png

        curve_png(choice.throughput_curve, png, chosen=choice.spec.nodes, baseline_tokens_per_s=choice.plain_tokens_per_s)
        typer.echo(f"curve plot written to {png}")
    write_output(out, json.dumps(choice.spec.to_json(), indent=1) + "\n")
    typer.echo(f"{choice.summary()}; written to {out}")




# --------------------------------------------------------------------------- device tuning
@app.command()
def profile(
    out: Path = typer.Option(..., "--out", help="latency JSON to write"),
    model: str = ModelOpt,
    heads: Optional[str] = HeadsOpt,
    sizes: str = typer.Option(",".join(map(str, PROFILE_SIZES)), "--sizes", help="tree tokens per verify step (every size up to 8: kernels change there)"),
    repeats: int = typer.Option(20, "--repeats", help="timed steps per size (after 3 warm-up steps)"),
    passes: int = typer.Option(3, "--passes", help="with several batch sizes: visit each this many times in turn, "
                               "the timed steps split between visits (spreads a slow phase of the machine)"),
    context: int = typer.Option(256, "--context", help="KV-cache length the steps run at"),
    batch_sizes: str = typer.Option("1", "--batch-sizes", help="sequences per step to profile, e.g. 1,2,4,8,16 "
                                    "(batch 1 is always included)"),
    temperature: float = typer.Option(0.0, "--temperature", help="> 0: time the steps with sample-and-match's draws"),
    top_k: int = TopKOpt,
    top_p: float = TopPOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """Latency of one verify step (heads included) against tree size and batch size, plus the plain decoding step."""
    from .profile import profile_latency

    size_list = parse_int_list("--sizes", sizes)
    batch_list = parse_int_list("--batch-sizes", batch_sizes)
    if repeats < 1:
        fail("--repeats must be >= 1")
    if passes < 1:
        fail(f"--passes {passes}: use an integer >= 1")
    sampling = sampling_or_fail(temperature, top_k, top_p)
    loaded, medusa_heads, _ = load_everything(model, heads, dtype, device, need_heads=size_list[-1] > 1)
    try:
        result = profile_latency(loaded, medusa_heads, size_list, repeats, context=context, batch_sizes=batch_list,
                                 sampling=sampling, passes=passes)
    except ValueError as err:
        fail(str(err))
    write_output(out, json.dumps(result, indent=1) + "\n")
    typer.echo(f"{'batch':>5} {'nodes':>5} {'median ms':>9} {'p10':>7} {'p90':>7}")
    for batch in result["batches"]:
        for row in [batch["plain_step"]] + [r for r in batch["verify"] if r["nodes"] > 1]:
            typer.echo(f"{batch['batch_size']:>5} {row['nodes']:>5} {row['median_ms']:>9.1f} {row['p10_ms']:>7.1f} {row['p90_ms']:>7.1f}")
    typer.echo(f"device: {result['device']}, dtype {result['dtype']}; written to {out}")


@app.command()
def tune(
    out: Path = typer.Option(..., "--out", help="tree spec JSON of the best trial"),
    model: str = ModelOpt,
    heads: Optional[str] = HeadsOpt,
    prompts: str = PromptsOpt,
    select: str = typer.Option("0:80:8", "--select", help="tuning prompts (measured every trial)"),
    holdout: Optional[str] = typer.Option("1:80:4", "--holdout", help="held-out prompts for the final bench ('' to skip)"),
    stats_file: Optional[Path] = typer.Option(None, "--stats", help="calibration stats (default: calibrate on the tuning prompts)"),
    trials: int = typer.Option(20, "--trials", help="total trials of the study (shared by all its workers)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="optuna storage URL (default: SQLite next to --out)"),
    study: str = typer.Option("treeopt-tune", "--study", help="study name (workers sharing a study use the same name)"),
    max_budget: int = typer.Option(128, "--max-budget"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="tokens per tuning prompt"),
    temperature: float = TemperatureOpt,
    top_k: int = TopKOpt,
    top_p: float = TopPOpt,
    seed: int = SeedOpt,
    acceptance: Optional[str] = typer.Option(None, "--acceptance", help="as for bench; typical also tunes its thresholds"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="held-out bench report"),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """Optuna study over budget, depth, children and objective, maximising measured tokens/s on this device."""
    from medusa_runtime.bench import format_report, report_json_line

    from .tune import TuneJob, check_storage, run_tune

    if trials < 1:
        fail("--trials must be >= 1")
    sampling = sampling_or_fail(temperature, top_k, top_p, seed, acceptance)
    if storage is not None:  # before the model loads: fail fast
        try:
            check_storage(storage)
        except ValueError as err:
            fail(str(err))
    loaded, medusa_heads, heads_path = load_everything(model, heads, dtype, device, need_heads=True)
    job = TuneJob(out, prompts, select, trials=trials, storage=storage, study=study, max_budget=max_budget,
                  max_new_tokens=max_new_tokens, sampling=sampling, holdout=holdout or None, command=command_line(), model=model,
                  stats=load_stats_or_fail(stats_file) if stats_file is not None else None)
    try:
        result = run_tune(loaded, medusa_heads, heads_path, job, load_prompt_ids(loaded, prompts, select),
                          load_prompt_ids(loaded, prompts, holdout) if holdout else None)
    except ValueError as err:
        fail(str(err))
    spec, done = result.spec, result.study
    typer.echo(f"best of {len(done.trials)} trials: {spec.nodes} nodes, {done.best_value:.2f} tok/s on the tuning prompts "
               f"({spec.meta['tuning_tokens_per_step']:.2f} tokens/step); params {done.best_params}; written to {out}")
    if result.holdout is not None:
        typer.echo("held-out:\n" + format_report(result.holdout))
        if json_out:
            write_output(json_out, json.dumps(result.holdout.to_json(), indent=1) + "\n")
        typer.echo(report_json_line(result.holdout))


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="folder for stats, latency, tree, pictures and report"),
    model: str = ModelOpt,
    heads: Optional[str] = HeadsOpt,
    calibrate_select: str = typer.Option("0:80:2", "--calibrate-select"),
    bench_select: str = typer.Option("1:80:4", "--bench-select", help="held-out prompts"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature", help="run the whole job for sampling at this temperature "
                                      "(calibration, profile and bench; 0: greedy)"),
    top_k: int = TopKOpt,
    top_p: float = TopPOpt,
    seed: int = SeedOpt,
    drafts: Optional[str] = DraftsOpt,
    head_temperature: Optional[str] = HeadTemperatureOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """Calibrate -> profile -> build auto -> bench on held-out MT-Bench prompts, on the embedded default."""
    from .demo import DemoConfig, run_demo

    sampling = sampling_or_fail(temperature, top_k, top_p, seed, drafts=drafts, head_temperature=head_temperature)
    loaded, medusa_heads, heads_path = load_everything(model, heads, dtype, device, need_heads=True)
    report = run_demo(loaded, medusa_heads, heads_path,
                      DemoConfig(calibrate_select=calibrate_select, bench_select=bench_select, max_new_tokens=max_new_tokens,
                                 sampling=sampling, command=command_line()),
                      out, echo=typer.echo)
    typer.echo(f"files in {out}: stats.json latency.json tree.json tree.png curve.png report.json")
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "per_prompt"}))


def measured_points_or_fail(path: Path) -> dict[int, dict[str, float]]:
    from .sweep import measured_points

    try:
        return measured_points(path)
    except ValueError as err:
        fail(str(err))


@app.command()
def plan(
    stats_file: Path = typer.Argument(..., metavar="STATS", help="stats JSON from 'treeopt calibrate'"),
    latency: Path = typer.Option(..., "--latency", help="latency JSON from 'treeopt profile --batch-sizes ...'"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the plan as JSON here"),
    png: Optional[Path] = typer.Option(None, "--png", help="plot tokens/s against batch size, Medusa vs plain"),
    measured: Optional[Path] = typer.Option(None, "--measured", help="a 'treeopt sweep --json' output: add its measured "
                                            "tokens/s (auto tree and plain decoding) to the plot"),
    objective: str = typer.Option(DEFAULT_OBJECTIVE, "--objective", help="as for build"),
    max_depth: Optional[int] = typer.Option(None, "--max-depth"),
    max_children: Optional[int] = typer.Option(None, "--max-children"),
    target: Optional[str] = typer.Option(None, "--for", help="medusa | trtllm | vllm: only trees that engine runs as they are"),
    folds: int = typer.Option(DEFAULT_FOLDS, "--folds"),
    batching: str = BatchingOpt,
):
    """For each profiled batch size: the tree size with the best predicted tokens/s, its speedup over plain
    decoding at that batch size, and the batch size from which plain decoding wins."""
    from .builder import BuildError
    from .design import TreeRequest
    from .plan import plan_batches

    stats = load_stats_or_fail(stats_file)
    latencies = load_latency_batches_or_fail(latency)
    try:
        result = plan_batches(stats, latencies, TreeRequest(None, objective, max_depth, max_children, target, folds), batching)
    except (BuildError, ValueError) as err:
        fail(str(err))
    typer.echo(result.table())
    doc = {"stats_file": str(stats_file), "latency_file": str(latency), **result.to_json()}
    if out:
        write_output(out, json.dumps(doc, indent=1) + "\n")
    if png:
        from .viz import plan_png

        plan_png(doc["rows"], png, measured_points_or_fail(measured) if measured else None)
        typer.echo(f"plot written to {png}")
    typer.echo(json.dumps({"switch_off_batch_size": result.switch_off_batch_size,
                           "planned_nodes": {r.batch_size: r.nodes for r in result.rows},
                           "predicted_speedup": {r.batch_size: r.speedup for r in result.rows}}))


@app.command()
def sweep(
    stats_file: Path = typer.Argument(..., metavar="STATS"),
    latency: Path = typer.Option(..., "--latency", help="latency JSON from 'treeopt profile' (for the auto-chosen size)"),
    budgets: str = typer.Option("4,8,16,32,64,128", "--budgets", help="path budgets to measure beside the auto one "
                                "(0: plain decoding through the runtime, always measured)"),
    batch_sizes: str = typer.Option("1", "--batch-sizes", help="batch sizes to sweep, each with its own auto tree "
                                    "(each must be in the latency profile)"),
    neighbours: bool = typer.Option(True, "--neighbours/--no-neighbours", help="also measure the budgets one below "
                                    "and one above the auto one at each batch size"),
    check: bool = typer.Option(True, "--check/--no-check", help="check every tree's outputs token for token against "
                               "each prompt's own Hugging Face decode"),
    rounds: int = typer.Option(1, "--rounds", help="times each batch (continuous: the whole queue) is decoded by every "
                               "tree, in rotated order; with --batching continuous, 2 or more give the ratios an interval"),
    model: str = ModelOpt,
    heads: Optional[str] = HeadsOpt,
    prompts: str = PromptsOpt,
    select: Optional[str] = typer.Option("1:80:4", "--select"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    json_out: Optional[Path] = typer.Option(None, "--json"),
    batching: str = BatchingOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """Measure tokens/s of trees of several budgets (and the auto-chosen one) side by side on the same prompts,
    at one or more batch sizes, at the sampling settings the stats were calibrated at."""
    from .builder import BuildError
    from .sweep import format_auto_vs, format_sweep, sweep_batch_sizes, sweep_trees

    stats = load_stats_or_fail(stats_file)
    sizes = parse_int_list("--budgets", budgets, minimum=0)
    batch_list = parse_int_list("--batch-sizes", batch_sizes)
    latencies = load_latency_batches_or_fail(latency)
    missing = [b for b in batch_list if b not in latencies]
    if missing:
        fail(f"{latency}: no batch size {', '.join(map(str, missing))} (profiled: {', '.join(map(str, sorted(latencies)))}); "
             f"re-run 'treeopt profile --batch-sizes {batch_sizes}'")
    if batching not in BATCHING:
        fail(f"--batching {batching!r}: use one of {', '.join(BATCHING)}")
    if rounds < 1:
        fail(f"--rounds {rounds}: use an integer >= 1")
    try:
        sampling = SamplingConfig.from_settings(stats.sampling()).with_drafts(stats.provenance.get("drafts"))  # as calibrated
    except SamplingError as err:
        fail(f"{stats_file}: provenance.sampling: {err}; re-run 'treeopt calibrate'")
    loaded, medusa_heads, _ = load_everything(model, heads, dtype, device, need_heads=True)
    prompt_ids = load_prompt_ids(loaded, prompts, select)
    try:
        planned = sweep_trees(stats, latencies, sizes, batch_list, batching, queue=len(prompt_ids), neighbours=neighbours)
    except (BuildError, ValueError) as err:
        fail(f"--budgets {budgets}: {err}")

    def show(summary: dict, rows) -> None:
        b = summary["batch_size"]
        typer.echo(f"batch size {b} ({batching} batches):" if len(batch_list) > 1 or b > 1 else "")
        typer.echo(format_sweep(rows) + "\n" + format_auto_vs(summary))

    results = sweep_batch_sizes(loaded, medusa_heads, planned, prompt_ids, max_new_tokens, sampling, batching, check, rounds, show)
    summary = {"prompts": prompts, "select": select, "max_new_tokens": max_new_tokens, "batches": results}
    if len(results) == 1:  # the single-batch-size layout earlier versions wrote
        summary = {**results[0], "prompts": prompts, "select": select}
    if json_out:
        write_output(json_out, json.dumps(summary, indent=1) + "\n")
    typer.echo(json.dumps([{k: v for k, v in r.items() if k != "rows"} for r in results]))


app.command()(evaluate)  # commands kept in their own modules (cli_trees.py, cli_heads.py)
app.command()(show)
app.command()(export)
app.command("import")(import_cmd)
app.command("pack-answers")(pack_answers_cmd)
app.command("train-heads")(train_heads_cmd)
app.command("mix-heads")(mix_heads_cmd)
app.command("export-heads")(export_heads)


def main() -> None:  # pragma: no cover
    app()
