"""The ``treeopt`` command line (typer).

Commands that need a model import torch lazily inside the command, so that ``build``, ``evaluate``,
``export``, ``import`` and ``show`` start in a fraction of a second.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from .tuning import PROFILE_SIZES

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Calibrate Medusa heads, build the optimal tree for your device, export it, and benchmark it.")

REPO_DATA = Path(__file__).resolve().parent.parent / "data"
DEFAULT_HEADS = {"smollm2-135m": REPO_DATA / "heads" / "smollm2-135m"}

ModelOpt = typer.Option("smollm2-135m", "--model", help="alias smollm2-135m, a HF folder, a .gguf file or a hub id")
HeadsOpt = typer.Option(None, "--heads", help="Medusa heads folder; default: the shipped heads of the default model; 'none' for no heads")
DtypeOpt = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16")
DeviceOpt = typer.Option("auto", "--device", help="auto (cuda if present) | cpu | cuda | cuda:N")
PromptsOpt = typer.Option("mt-bench", "--prompts", help="mt-bench | sharegpt | humaneval | FILE.jsonl")
SelectOpt = typer.Option(None, "--select", help="Python slice START:STOP[:STEP] over the prompts")


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def command_line() -> str:
    return "treeopt " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def resolve_heads_path(model: str, heads: Optional[str]) -> Optional[Path]:
    if heads is not None:
        return None if heads.lower() == "none" else Path(heads)
    default = DEFAULT_HEADS.get(model)
    return default if default is not None and default.exists() else None


def load_everything(model: str, heads: Optional[str], dtype: str, device: str, need_heads: bool = False):
    """Model + heads, with errors turned into CLI messages."""
    from medusa_runtime.heads import HeadsFormatError, load_heads
    from medusa_runtime.models import load_model

    try:
        loaded = load_model(model, device=device, dtype=dtype)
    except (FileNotFoundError, ValueError, OSError) as err:
        fail(str(err))
    heads_path = resolve_heads_path(model, heads)
    if heads_path is None:
        if need_heads:
            fail(f"no Medusa heads for --model {model}: pass --heads DIR (train some with 'treeopt train-heads')")
        return loaded, None, None
    try:
        return loaded, load_heads(heads_path, loaded.model), str(heads_path)
    except HeadsFormatError as err:
        fail(str(err))


def load_tree_or_fail(tree: Optional[Path], num_heads: Optional[int]):
    from medusa_runtime.spec import TreeSpec, TreeSpecError, load_tree

    if tree is None:
        return TreeSpec([], {"builder": "empty"})
    try:
        return load_tree(tree, num_heads)
    except TreeSpecError as err:
        fail(str(err))


def warn_if_built_for_other_heads(spec, model: str, heads_path: Optional[str], where: str) -> None:
    """A tree built from stats of another model or other heads still runs, but its prediction is off."""
    from .calibrate import heads_fingerprint

    built_for = spec.meta.get("stats_provenance") or {}
    if not built_for or heads_path is None:
        return
    now = {"model": model, "heads_sha256": heads_fingerprint(heads_path)}
    then = {"model": built_for.get("model"), "heads_sha256": built_for.get("heads_sha256")}
    if now != then:
        typer.secho(f"warning: {where} was built from stats of {then} but runs with {now}; its predicted "
                    f"tokens/step does not apply (re-run calibrate and build for these heads)", fg=typer.colors.YELLOW, err=True)


def load_runtime(model: str, heads: Optional[str], tree: Optional[Path], oracle: bool, dtype: str, device: str):
    """Model, heads (none needed with --oracle), and a tree checked against the heads."""
    loaded, medusa_heads, heads_path = load_everything(model, None if oracle and heads is None else heads, dtype, device)
    spec = load_tree_or_fail(tree, medusa_heads.num_heads if medusa_heads is not None and not oracle else None)
    if spec.paths and medusa_heads is None and not oracle:
        fail("a tree needs Medusa heads: pass --heads DIR, or --oracle to measure the ceiling")
    return loaded, medusa_heads, heads_path, spec


def load_prompt_ids(loaded, prompts: str, select: Optional[str]) -> list[list[int]]:
    from medusa_runtime.prompts import render_chat, select_prompts

    try:
        texts = select_prompts(prompts, select)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    return [render_chat(loaded.tokenizer, t) for t in texts]


# --------------------------------------------------------------------------- runtime commands
@app.command()
def generate(
    prompt: str = typer.Argument(..., help="the user message (chat template applied when the model has one)"),
    model: str = ModelOpt,
    heads: Optional[str] = HeadsOpt,
    tree: Optional[Path] = typer.Option(None, "--tree", help="tree spec JSON (default: plain decoding)"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature", help="0: greedy (lossless); > 0: typical acceptance"),
    posterior_threshold: float = typer.Option(0.09, "--posterior-threshold", help="typical acceptance epsilon"),
    posterior_alpha: float = typer.Option(0.3, "--posterior-alpha", help="typical acceptance delta"),
    oracle: bool = typer.Option(False, "--oracle", help="guesses from the base model's own greedy run (a ceiling)"),
    seed: int = typer.Option(0, "--seed"),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """Generate an answer with Medusa tree decoding, streaming the text."""
    import time

    from medusa_runtime.bench import hf_greedy
    from medusa_runtime.decoding import MedusaDecoder, PromptTooLongError, SamplingConfig
    from medusa_runtime.prompts import render_chat

    loaded, medusa_heads, _, spec = load_runtime(model, heads, tree, oracle, dtype, device)
    ids = render_chat(loaded.tokenizer, prompt)
    sampling = SamplingConfig(temperature, posterior_threshold, posterior_alpha, seed)
    decoder = MedusaDecoder(loaded.model, None if oracle else medusa_heads, spec, loaded.eos_token_ids, sampling)
    reference = hf_greedy(loaded.model, ids, max_new_tokens, loaded.eos_token_ids) if oracle else None
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
                f"{len(result.tokens) / seconds:.1f} tokens/s, {spec.nodes}-node tree, stop: {result.stop_reason}]", err=True, fg=typer.colors.BLUE)


@app.command()
def bench(
    model: str = ModelOpt,
    heads: Optional[str] = HeadsOpt,
    tree: Optional[Path] = typer.Option(None, "--tree", help="tree spec JSON (default: plain decoding, the empty tree)"),
    oracle: bool = typer.Option(False, "--oracle", help="guesses from the base model's own greedy run: the tree's ceiling"),
    prompts: str = PromptsOpt,
    select: Optional[str] = SelectOpt,
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature"),
    posterior_threshold: float = typer.Option(0.09, "--posterior-threshold"),
    posterior_alpha: float = typer.Option(0.3, "--posterior-alpha"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the report here"),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """HF generate greedy vs the Medusa runtime on the same prompts: speed, tokens/step, token-for-token check."""
    from medusa_runtime.bench import format_report, report_json_line, run_bench
    from medusa_runtime.decoding import PromptTooLongError, SamplingConfig

    loaded, medusa_heads, heads_path, spec = load_runtime(model, heads, tree, oracle, dtype, device)
    warn_if_built_for_other_heads(spec, model, heads_path if not oracle else None, str(tree))
    ids = load_prompt_ids(loaded, prompts, select)
    try:
        report = run_bench(loaded, None if oracle else medusa_heads, spec, ids, max_new_tokens, oracle,
                           SamplingConfig(temperature, posterior_threshold, posterior_alpha))
    except PromptTooLongError as err:
        fail(str(err))
    report.model, report.heads, report.tree = model, None if oracle else heads_path, str(tree) if tree else None
    report.prompt_source, report.select = prompts, select
    typer.echo(format_report(report))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.to_json(), indent=1) + "\n", encoding="utf-8")
    typer.echo(report_json_line(report))


@app.command("train-heads")
def train_heads_cmd(
    out: Path = typer.Option(..., "--out", help="output folder (upstream Medusa checkpoint format)"),
    model: str = ModelOpt,
    data: str = typer.Option("sharegpt", "--data", help="sharegpt | FILE.jsonl of {\"prompt\": ...} or {\"text\": ...} rows"),
    num_heads: int = typer.Option(4, "--num-heads"),
    num_layers: int = typer.Option(1, "--num-layers", help="ResBlocks per head"),
    shared_lm_head: bool = typer.Option(True, "--shared-lm-head/--own-lm-head", help="v2 (reuse the base lm_head) or v1"),
    root_conditioned: bool = typer.Option(False, "--root-conditioned/--plain", help="heads also read the root token's embedding "
                                          "(treeopt extension of the checkpoint format; --plain: upstream Medusa heads)"),
    tokens: int = typer.Option(320_000, "--tokens", help="response tokens of self-distillation data"),
    epochs: int = typer.Option(3, "--epochs"),
    lr: float = typer.Option(1e-3, "--lr"),
    batch_size: int = typer.Option(256, "--batch-size", help="training positions per step"),
    gen_batch_size: int = typer.Option(128, "--gen-batch-size", help="prompts answered together while generating data"),
    gen_dtype: str = typer.Option("", "--gen-dtype", help="dtype that writes the answers (bfloat16: faster on CPUs with AVX512-BF16; "
                                  "targets stay the training dtype's own argmax)"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="length of each generated answer"),
    max_prompt_tokens: int = typer.Option(128, "--max-prompt-tokens", help="skip longer prompts"),
    num_prompts: int = typer.Option(12000, "--num-prompts", help="prompts drawn (a fixed shuffle) to answer; "
                                    "answers stop at --tokens or when every drawn prompt is answered"),
    mtbench_select: str = typer.Option("0:80", "--mtbench-select", help="MT-Bench prompts for the accuracy report ('' to skip)"),
    draft_vocab: int = typer.Option(4096, "--draft-vocab", help="guess only from the N most frequent answer tokens (0: whole vocabulary)"),
    save_dtype: str = typer.Option("float16", "--save-dtype", help="dtype the weights are stored in (and evaluated at)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace heads already in --out"),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """Train Medusa-1 heads by self-distillation (base frozen) and write them with a README of figures."""
    from .train_heads import TrainConfig, TrainError, run_train_heads

    cfg = TrainConfig(num_heads=num_heads, num_layers=num_layers, shared_lm_head=shared_lm_head, root_conditioned=root_conditioned, tokens=tokens,
                      epochs=epochs, lr=lr, batch_size=batch_size, gen_batch_size=gen_batch_size, gen_dtype=gen_dtype,
                      draft_vocab=draft_vocab, save_dtype=save_dtype,
                      max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens, prompts=num_prompts)
    try:
        cfg.validate()
    except TrainError as err:
        fail(str(err))
    loaded, _, _ = load_everything(model, "none", dtype, device)
    try:
        result = run_train_heads(loaded, data, cfg, out, overwrite, command_line(), mtbench_select or None)
    except TrainError as err:
        fail(str(err))
    for name in ("held_out", "mtbench"):
        if result[name]:
            typer.echo(f"{name}: top-1 per head " + " ".join(f"{a:.3f}" for a in result[name]["top1"]))
    typer.echo(f"heads written to {out} (see {out}/README.md)")


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
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """Roll out the base model greedily and measure each head's rank-r accuracy and the joint path statistics."""
    from .calibrate import calibrate as run_calibration, heads_fingerprint

    if topk < 1:
        fail(f"--topk {topk}: must be >= 1")
    loaded, medusa_heads, heads_path = load_everything(model, heads, dtype, device, need_heads=True)
    ids = load_prompt_ids(loaded, prompts, select)
    provenance = {"heads": heads_path, "heads_sha256": heads_fingerprint(heads_path), "prompt_source": prompts,
                  "select": select, "command": command_line()}
    try:
        stats = run_calibration(loaded, medusa_heads, ids, max_new_tokens, topk, provenance, rollout=rollout)
    except ValueError as err:
        fail(str(err))
    out.parent.mkdir(parents=True, exist_ok=True)
    stats.save(out)
    acc = stats.accuracy()
    typer.echo(f"{stats.positions} positions from {len(ids)} prompts; top-1 accuracy per head: "
               + " ".join(f"{a[0]:.3f}" for a in acc))
    typer.echo(f"stats written to {out}")


def load_stats_or_fail(path: Path):
    from .stats import StatsError, load_stats

    try:
        return load_stats(path)
    except StatsError as err:
        fail(str(err))


@app.command()
def build(
    stats_file: Path = typer.Argument(..., metavar="STATS", help="stats JSON from 'treeopt calibrate'"),
    budget: str = typer.Option(..., "--budget", help="paths in the tree (nodes - 1), or 'auto' with --latency"),
    out: Path = typer.Option(..., "--out", help="tree spec JSON to write"),
    max_depth: Optional[int] = typer.Option(None, "--max-depth", help="default: every head the stats measured"),
    max_children: Optional[int] = typer.Option(None, "--max-children", help="ranks < C at every node (default: --topk of the stats)"),
    objective: str = typer.Option("empirical", "--objective", help="empirical (joint path frequencies) | independent (product of a[k][r])"),
    latency: Optional[Path] = typer.Option(None, "--latency", help="latency JSON from 'treeopt profile' (for --budget auto)"),
    max_budget: int = typer.Option(255, "--max-budget", help="largest budget --budget auto considers"),
    png: Optional[Path] = typer.Option(None, "--png", help="with --budget auto: plot the predicted curves"),
):
    """Build the tree that maximises expected accepted tokens per step (provably optimal for its budget)."""
    from medusa_runtime.spec import TreeSpec

    from .build import BuildError, build_tree, predicted_curve
    from .stats import replay_tokens_per_step

    stats = load_stats_or_fail(stats_file)
    auto = budget.strip().lower() == "auto"
    if auto:
        if latency is None:
            fail("--budget auto needs --latency latency.json (make one with 'treeopt profile')")
        n_paths = max_budget
    else:
        try:
            n_paths = int(budget)
        except ValueError:
            fail(f"--budget {budget!r}: an integer number of paths, or 'auto'")
    try:
        built = build_tree(stats, n_paths, objective, max_depth, max_children, strict=not auto)
    except BuildError as err:
        fail(str(err))
    curve = predicted_curve(stats, built)
    meta = {"builder": "treeopt build", "objective": objective, "budget": n_paths, "max_depth": max_depth,
            "max_children": max_children, "stats_file": str(stats_file), "stats_provenance": stats.provenance,
            "num_heads": stats.num_heads}
    if auto:
        from .tuning import choose_budget, load_latency

        try:
            lat = load_latency(latency)
        except ValueError as err:
            fail(str(err))
        choice = choose_budget(curve, lat)
        typer.echo(choice.table())
        n_paths = choice.paths
        meta.update({"budget": n_paths, "budget_auto": True, "latency_file": str(latency), "latency_device": lat.device,
                     "predicted_speedup": round(choice.speedup, 4), "predicted_tokens_per_s": round(choice.tokens_per_s, 3),
                     "throughput_curve": choice.rows})
        if png:
            from .viz import curve_png

            curve_png(choice.rows, png, chosen=n_paths + 1, baseline_tokens_per_s=choice.baseline_tokens_per_s)
            typer.echo(f"curve plot written to {png}")
    paths = built.paths[:n_paths]
    meta["expected_tokens_per_step"] = round(replay_tokens_per_step(stats, paths), 4)
    meta["objective_estimate_tokens_per_step"] = round(built.expected_tokens_per_step(n_paths), 4)
    meta["path_probabilities"] = [round(p, 6) for p in built.probabilities[:n_paths]]
    meta["predicted_curve"] = [row for row in curve if row["paths"] <= n_paths]
    spec = TreeSpec(paths, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    spec.save(out)
    typer.echo(f"{spec.nodes}-node tree (depth {spec.depth}, {objective}): predicted {meta['expected_tokens_per_step']:.3f} "
               f"tokens/step on the calibration rollouts; written to {out}")


@app.command()
def evaluate(
    tree: Path = typer.Argument(..., help="tree spec JSON (or any format 'treeopt import' reads)"),
    stats_file: Path = typer.Argument(..., metavar="STATS"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
):
    """Predicted tokens/step of any tree on any calibration stats (replayed exactly, no independence assumption)."""
    from .build import path_probability_fn
    from .stats import replay_tokens_per_step

    stats = load_stats_or_fail(stats_file)
    spec = load_any_tree(tree, stats.num_heads)
    prob = path_probability_fn(stats, "empirical")
    indep = path_probability_fn(stats, "independent")
    result = {
        "tree": str(tree), "nodes": spec.nodes, "depth": spec.depth,
        "predicted_tokens_per_step": round(replay_tokens_per_step(stats, spec.paths), 4),
        "empirical_estimate": round(1 + sum(prob(p) for p in spec.paths), 4),
        "independent_estimate": round(1 + sum(indep(p) if max(p) < stats.topk else 0.0 for p in spec.paths), 4),
        "stats": str(stats_file), "positions": stats.positions,
    }
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"{tree}: {spec.nodes} nodes, depth {spec.depth}\n"
                   f"  predicted tokens/step (replay on {stats.positions} positions): {result['predicted_tokens_per_step']:.3f}\n"
                   f"  estimate from path frequencies: {result['empirical_estimate']:.3f}   "
                   f"under independence: {result['independent_estimate']:.3f}")


def load_any_tree(path: Path, num_heads: Optional[int] = None):
    """A spec JSON, or any medusa_choices form (so upstream trees can be evaluated directly)."""
    from medusa_runtime.spec import TreeSpecError, validate_paths

    from .formats import import_tree

    try:
        spec = import_tree(path)
        if num_heads is not None:
            validate_paths(spec.paths, num_heads, where=str(path))
        return spec
    except TreeSpecError as err:
        fail(str(err))


@app.command()
def show(
    tree: Path = typer.Argument(..., help="tree spec JSON"),
    png: Optional[Path] = typer.Option(None, "--png", help="also draw the tree to this PNG"),
    stats_file: Optional[Path] = typer.Option(None, "--stats", help="label nodes with P(path) from these stats"),
):
    """Print the tree as indented text (and draw it)."""
    from .viz import tree_png, tree_text

    spec = load_any_tree(tree)
    probabilities = None
    if stats_file is not None:
        from .build import path_probability_fn

        prob = path_probability_fn(load_stats_or_fail(stats_file), "empirical")
        probabilities = {p: prob(p) for p in spec.paths}
    elif len(spec.meta.get("path_probabilities", [])) == len(spec.paths):
        probabilities = dict(zip(spec.paths, spec.meta["path_probabilities"]))
    typer.echo(tree_text(spec, probabilities))
    if png:
        tree_png(spec, png, probabilities)
        typer.echo(f"picture written to {png}")


@app.command()
def export(
    tree: Path = typer.Argument(..., help="tree spec JSON"),
    fmt: str = typer.Option("medusa", "--format", help="medusa | trtllm-yaml | triton | json"),
    out: Optional[Path] = typer.Option(None, "--out", help="write here instead of stdout"),
):
    """Write the tree as upstream Medusa / TensorRT-LLM medusa_choices, trtllm-bench YAML, or the Triton string."""
    from medusa_runtime.spec import TreeSpecError

    from .formats import export_tree

    spec = load_any_tree(tree)
    try:
        text = export_tree(spec, fmt)
    except TreeSpecError as err:
        fail(str(err))
    if out:
        out.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    else:
        typer.echo(text.rstrip("\n"))


@app.command("import")
def import_cmd(
    source: Path = typer.Argument(..., help="medusa_choices (Python/JSON literal), trtllm YAML, Triton string, or dense [1, 7, 6]"),
    out: Path = typer.Option(..., "--out", help="tree spec JSON to write"),
):
    """Convert an engine's tree (never evaluated as code) into a treeopt spec."""
    spec = load_any_tree(source)
    spec.save(out)
    typer.echo(f"{spec.nodes}-node tree (depth {spec.depth}) written to {out}")


# --------------------------------------------------------------------------- device tuning
@app.command()
def profile(
    out: Path = typer.Option(..., "--out", help="latency JSON to write"),
    model: str = ModelOpt,
    heads: Optional[str] = HeadsOpt,
    sizes: str = typer.Option(",".join(map(str, PROFILE_SIZES)), "--sizes", help="tree tokens per verify step (every size up to 8: kernels change there)"),
    repeats: int = typer.Option(20, "--repeats", help="timed steps per size (after 3 warm-up steps)"),
    context: int = typer.Option(256, "--context", help="KV-cache length the steps run at"),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """Median latency of one verify step (heads included) against tree size, plus the plain decoding step."""
    from .profile import profile_latency

    try:
        size_list = sorted({int(x) for x in sizes.split(",") if x.strip()})
    except ValueError:
        fail(f"--sizes {sizes!r}: a comma-separated list of integers, e.g. 1,2,4,8")
    if not size_list or size_list[0] < 1:
        fail("--sizes: every size must be >= 1")
    if repeats < 1:
        fail("--repeats must be >= 1")
    loaded, medusa_heads, _ = load_everything(model, heads, dtype, device, need_heads=size_list[-1] > 1)
    try:
        result = profile_latency(loaded, medusa_heads, size_list, repeats, context=context)
    except ValueError as err:
        fail(str(err))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    typer.echo(f"{'nodes':>5} {'median ms':>9} {'p10':>7} {'p90':>7}")
    for row in [result["plain_step"]] + [r for r in result["verify"] if r["nodes"] > 1]:
        typer.echo(f"{row['nodes']:>5} {row['median_ms']:>9.1f} {row['p10_ms']:>7.1f} {row['p90_ms']:>7.1f}")
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
    temperature: float = typer.Option(0.0, "--temperature", help="> 0 also tunes the typical-acceptance thresholds"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="held-out bench report"),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """Optuna study over budget, depth, children and objective, maximising measured tokens/s on this device."""
    from medusa_runtime.bench import format_report, report_json_line, run_bench
    from medusa_runtime.decoding import SamplingConfig

    from .calibrate import calibrate as run_calibration, heads_fingerprint
    from .tune import TuneSpace, best_tree, run_study

    if trials < 1:
        fail("--trials must be >= 1")
    loaded, medusa_heads, heads_path = load_everything(model, heads, dtype, device, need_heads=True)
    ids = load_prompt_ids(loaded, prompts, select)
    if stats_file is not None:
        stats = load_stats_or_fail(stats_file)
    else:
        stats = run_calibration(loaded, medusa_heads, ids, max_new_tokens, 10,
                                {"heads": heads_path, "heads_sha256": heads_fingerprint(heads_path), "prompt_source": prompts, "select": select})
    out.parent.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{out.parent.resolve() / 'treeopt-tune.db'}"
    result = run_study(loaded, medusa_heads, stats, ids, trials, storage, study, max_new_tokens,
                       TuneSpace(max_budget=max_budget, temperature=temperature))
    try:
        spec = best_tree(result)
    except ValueError as err:
        fail(str(err))
    spec.meta["storage"] = storage if storage.startswith("sqlite") else storage.split("@")[-1]  # never store passwords
    spec.save(out)
    typer.echo(f"best of {len(result.trials)} trials: {spec.nodes} nodes, {result.best_value:.2f} tok/s on the tuning prompts "
               f"({spec.meta['tuning_tokens_per_step']:.2f} tokens/step); params {result.best_params}; written to {out}")
    if holdout:
        sampling = SamplingConfig(temperature, spec.meta.get("posterior_threshold", 0.09), spec.meta.get("posterior_alpha", 0.3))
        report = run_bench(loaded, medusa_heads, spec, load_prompt_ids(loaded, prompts, holdout), 128, sampling=sampling)
        report.model, report.heads, report.tree, report.prompt_source, report.select = model, heads_path, str(out), prompts, holdout
        typer.echo("held-out:\n" + format_report(report))
        if json_out:
            json_out.write_text(json.dumps(report.to_json(), indent=1) + "\n", encoding="utf-8")
        typer.echo(report_json_line(report))


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="folder for stats, latency, tree, pictures and report"),
    model: str = ModelOpt,
    heads: Optional[str] = HeadsOpt,
    calibrate_select: str = typer.Option("0:80:2", "--calibrate-select"),
    bench_select: str = typer.Option("1:80:4", "--bench-select", help="held-out prompts"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """Calibrate -> profile -> build auto -> bench on held-out MT-Bench prompts, on the embedded default."""
    from .demo import DemoConfig, run_demo

    loaded, medusa_heads, heads_path = load_everything(model, heads, dtype, device, need_heads=True)
    report = run_demo(loaded, medusa_heads, heads_path,
                      DemoConfig(calibrate_select=calibrate_select, bench_select=bench_select, max_new_tokens=max_new_tokens),
                      out, echo=typer.echo)
    typer.echo(f"files in {out}: stats.json latency.json tree.json tree.png curve.png report.json")
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "per_prompt"}))


@app.command()
def sweep(
    stats_file: Path = typer.Argument(..., metavar="STATS"),
    latency: Path = typer.Option(..., "--latency", help="latency JSON from 'treeopt profile' (for the auto-chosen size)"),
    budgets: str = typer.Option("4,8,16,32,64,128", "--budgets", help="path budgets to measure beside the auto one"),
    model: str = ModelOpt,
    heads: Optional[str] = HeadsOpt,
    prompts: str = PromptsOpt,
    select: Optional[str] = typer.Option("1:80:4", "--select"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    json_out: Optional[Path] = typer.Option(None, "--json"),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """Measure tokens/s of trees of several budgets (and the auto-chosen one) side by side on the same prompts."""
    from medusa_runtime.spec import TreeSpec

    from .build import BuildError, build_tree, predicted_curve
    from .stats import replay_tokens_per_step
    from .sweep import format_sweep, rows_json, run_sweep
    from .tuning import choose_budget, load_latency

    stats = load_stats_or_fail(stats_file)
    try:
        sizes = sorted({int(b) for b in budgets.split(",") if b.strip()})
        lat = load_latency(latency)
        built = build_tree(stats, max(sizes + [max(lat.sizes) - 1]), strict=False)  # auto may pick up to the largest profiled size
        if len(built.paths) < max(sizes):
            raise BuildError(f"--budgets {budgets}: the stats support only {len(built.paths)} paths; lower the budgets")
    except (ValueError, BuildError) as err:
        fail(str(err))
    choice = choose_budget(predicted_curve(stats, built), lat)
    trees = {"empty": TreeSpec([])}
    for n in sizes:
        trees[f"budget {n}"] = TreeSpec(built.paths[:n], {"expected_tokens_per_step": round(replay_tokens_per_step(stats, built.paths[:n]), 4)})
    trees[f"auto ({choice.paths})"] = TreeSpec(built.paths[: choice.paths], {"expected_tokens_per_step": round(replay_tokens_per_step(stats, built.paths[: choice.paths]), 4)})
    loaded, medusa_heads, _ = load_everything(model, heads, dtype, device, need_heads=True)
    rows = run_sweep(loaded, medusa_heads, trees, load_prompt_ids(loaded, prompts, select), max_new_tokens)
    typer.echo(format_sweep(rows))
    best = max(r.tokens_per_s for r in rows if not r.label.startswith("auto"))
    auto = rows[-1]
    summary = {"auto_paths": choice.paths, "auto_tokens_per_s": round(auto.tokens_per_s, 3), "best_budget_tokens_per_s": round(best, 3),
               "auto_vs_best": round(auto.tokens_per_s / best, 4), "prompts": prompts, "select": select, "rows": rows_json(rows)}
    if json_out:
        json_out.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "rows"}))


def main() -> None:  # pragma: no cover
    app()
