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

from medusa_runtime.files import write_text_atomic
from medusa_runtime.sampling import ACCEPTANCE_RULES, SamplingConfig, SamplingError

from .builder import DEFAULT_OBJECTIVE
from .crossval import DEFAULT_FOLDS
from .design import DEFAULT_MAX_BUDGET
from .admission import BATCHING, DEFAULT_BATCHING
from .train_config import TrainConfig, TrainError
from .tuning import PROFILE_SIZES

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Calibrate Medusa heads, build the optimal tree for your device, export it, and benchmark it.")

REPO_DATA = Path(__file__).resolve().parent.parent / "data"
DEFAULT_HEADS = {"smollm2-135m": REPO_DATA / "heads" / "smollm2-135m"}

ModelOpt = typer.Option("smollm2-135m", "--model", help="alias smollm2-135m, a HF folder, a .gguf file or a hub id")
HeadsOpt = typer.Option(None, "--heads", help="Medusa heads folder; default: the shipped heads of the default model; 'none' for no heads")
DtypeOpt = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16")
BatchingOpt = typer.Option(DEFAULT_BATCHING, "--batching", help=f"{' | '.join(BATCHING)}: rows leave a batch when done "
                           "and none join, or finished rows are replaced at once (in-flight batching, as servers run); "
                           "bench and sweep run either")
DeviceOpt = typer.Option("auto", "--device", help="auto (cuda if present) | cpu | cuda | cuda:N")
PromptsOpt = typer.Option("mt-bench", "--prompts", help="mt-bench | sharegpt | humaneval | FILE.jsonl")
SelectOpt = typer.Option(None, "--select", help="Python slice START:STOP[:STEP] over the prompts")
TemperatureOpt = typer.Option(0.0, "--temperature", help="0: greedy; > 0: sample (lossless sample-and-match by default)")
TopKOpt = typer.Option(0, "--top-k", help="with --temperature > 0: sample from the k most likely tokens (0: all)")
TopPOpt = typer.Option(1.0, "--top-p", help="with --temperature > 0: sample from the most likely tokens holding this mass (1: all)")
SeedOpt = typer.Option(0, "--seed", help="keys the draws: a seed and a prompt fix the text")
ThresholdOpt = typer.Option(SamplingConfig.posterior_threshold, "--posterior-threshold", help="typical acceptance epsilon")
AlphaOpt = typer.Option(SamplingConfig.posterior_alpha, "--posterior-alpha", help="typical acceptance delta")
EngineOpt = typer.Option(None, "--engine", help="medusa | trtllm | vllm: run the heads as that engine does (plain heads, "
                         "whole vocabulary (vllm: or the draft vocabulary), no context lookup, no prefix attention); "
                         "default: as treeopt's runtime runs them")
DraftsOpt = typer.Option(None, "--drafts", help="mode | coupled: rank the heads' guesses by their logits, or coupled with the "
                         "target's keyed draws (the default at temperature > 0; bench and generate: the tree's)")
HeadTemperatureOpt = typer.Option(None, "--head-temperature", help="coupled drafts: T for all heads or T1,T2,.. per head "
                                  "(calibrate fits it when left out; bench and generate: the tree's)")
AcceptanceOpt = typer.Option(None, "--acceptance", help=f"{' | '.join(ACCEPTANCE_RULES)}: default greedy at temperature 0, "
                             "sample (sample-and-match, lossless) above; typical is upstream Medusa's, lossy")


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def write_output(path: Path, text: str) -> None:
    """A command's output file: its folder created, written atomically, an OSError turned into a CLI error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    except OSError as err:
        fail(f"{path}: cannot be written ({err.strerror or err.__class__.__name__}); choose another path")


def sampling_or_fail(temperature: float, top_k: int = 0, top_p: float = 1.0, seed: int = 0, acceptance: Optional[str] = None,
                     posterior_threshold: float = SamplingConfig.posterior_threshold,
                     posterior_alpha: float = SamplingConfig.posterior_alpha, drafts: Optional[str] = None,
                     head_temperature: Optional[str] = None) -> SamplingConfig:
    """The sampling settings of a command, or a one-line error naming the option; options greedy ignores get a warning."""
    try:
        taus = None if head_temperature is None else tuple(float(t) for t in head_temperature.split(","))
    except ValueError:
        fail(f"--head-temperature {head_temperature!r}: write one number for all heads or one per head, e.g. 0.7 or 0.7,0.8,1,1")
    try:
        sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, acceptance=acceptance,
                                  posterior_threshold=posterior_threshold, posterior_alpha=posterior_alpha, drafts=drafts,
                                  head_temperature=taus)
    except SamplingError as err:
        fail(str(err))
    for option in sampling.ignored_options():
        typer.secho(f"warning: {option} has no effect at --temperature 0 (greedy decoding)", fg=typer.colors.YELLOW, err=True)
    return sampling


def drafts_of_tree(spec, sampling: SamplingConfig, where: str) -> SamplingConfig:
    """Sampled decoding drafts as the tree's stats were ranked (its draft rule and head temperatures) unless the
    command said otherwise; a warning when it runs with another rule than its stats were calibrated with."""
    from medusa_runtime.sampling import describe_drafts, same_distribution

    provenance = spec.meta.get("stats_provenance") or {}
    built_for = spec.meta.get("sampling") or provenance.get("sampling")
    if not (sampling.sampled and spec.paths and provenance and same_distribution(built_for, sampling.settings())):
        return sampling
    recorded = provenance.get("drafts") or {"rule": "mode"}  # stats before the field were ranked by the heads' logits
    if sampling.drafts is None and sampling.head_temperature is None:
        try:
            return sampling.with_drafts(recorded)
        except SamplingError as err:
            fail(f"{where}: stats_provenance.drafts: {err}; build the tree again from new stats")
    if sampling.draft_rule != recorded.get("rule"):
        typer.secho(f"warning: {where} was built from stats ranked with {describe_drafts(recorded)} but runs with "
                    f"{describe_drafts(sampling.draft_settings())}; its predicted tokens/step does not apply (calibrate with "
                    f"--drafts {sampling.draft_rule} and build again, or leave out --drafts)", fg=typer.colors.YELLOW, err=True)
    return sampling


def warn_if_calibrated_for_other_sampling(spec, sampling: SamplingConfig, where: str) -> None:
    """A tree runs at any sampling settings, but its predicted tokens/step is for the settings it was calibrated at."""
    from medusa_runtime.sampling import describe_settings, same_distribution, settings_options

    built_for = spec.meta.get("sampling") or (spec.meta.get("stats_provenance") or {}).get("sampling")
    if not spec.paths or (built_for is None and not spec.meta.get("stats_provenance")):
        return  # no calibration behind the tree: nothing to compare
    if not same_distribution(built_for, sampling.settings()):
        options = settings_options(sampling.settings())
        typer.secho(f"warning: {where} was built from stats calibrated at {describe_settings(built_for)} but runs at "
                    f"{sampling.describe()}; its predicted tokens/step does not apply (calibrate with "
                    f"'treeopt calibrate{' ' + options if options else ''}' and build again)", fg=typer.colors.YELLOW, err=True)


def command_line() -> str:
    return "treeopt " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def resolve_heads_path(model: str, heads: Optional[str]) -> Optional[Path]:
    if heads is not None:
        return None if heads.lower() == "none" else Path(heads)
    default = DEFAULT_HEADS.get(model)
    return default if default is not None and default.exists() else None


def load_everything(model: str, heads: Optional[str], dtype: str, device: str, need_heads: bool = False,
                    engine: Optional[str] = None):
    """Model + heads (as ``engine`` runs them, when given), with errors turned into CLI messages."""
    from medusa_runtime.checkpoint import HeadsFormatError
    from medusa_runtime.heads import ENGINES, EngineError, load_heads

    if engine is not None and engine not in ENGINES:
        fail(f"--engine {engine!r}: use one of {', '.join(ENGINES)}")
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
        medusa_heads = load_heads(heads_path, loaded.model)
        return loaded, medusa_heads if engine is None else medusa_heads.engine_view(engine), str(heads_path)
    except (HeadsFormatError, EngineError) as err:
        fail(str(err))


def load_tree_or_fail(tree: Optional[Path], num_heads: Optional[int]):
    from medusa_runtime.spec import TreeSpec, TreeSpecError, load_tree

    if tree is None:
        return TreeSpec([], {"builder": "empty"})
    try:
        return load_tree(tree, num_heads)
    except TreeSpecError as err:
        fail(str(err))


def warn_if_built_for_other_heads(spec, model: str, heads_path: Optional[str], where: str, engine: Optional[str] = None) -> None:
    """A tree built from stats of another model, other heads or the heads run another way (``--engine``) still runs,
    but its prediction is off."""
    from .calibration import heads_fingerprint

    built_for = spec.meta.get("stats_provenance") or {}
    if not built_for or heads_path is None:
        return
    now = {"model": model, "heads_sha256": heads_fingerprint(heads_path), "engine": engine}
    then = {"model": built_for.get("model"), "heads_sha256": built_for.get("heads_sha256"), "engine": built_for.get("engine")}
    if now != then:
        typer.secho(f"warning: {where} was built from stats of {then} but runs with {now}; its predicted "
                    f"tokens/step does not apply (re-run calibrate and build for these heads)", fg=typer.colors.YELLOW, err=True)


def load_runtime(model: str, heads: Optional[str], tree: Optional[Path], oracle: bool, dtype: str, device: str,
                 engine: Optional[str] = None):
    """Model, heads (none needed with --oracle; as ``engine`` runs them, when given), and a tree checked against them."""
    loaded, medusa_heads, heads_path = load_everything(model, None if oracle and heads is None else heads, dtype, device,
                                                       engine=None if oracle else engine)
    spec = load_tree_or_fail(tree, medusa_heads.num_heads if medusa_heads is not None and not oracle else None)
    if spec.paths and medusa_heads is None and not oracle:
        fail("a tree needs Medusa heads: pass --heads DIR, or --oracle to measure the ceiling")
    if medusa_heads is not None and not oracle:
        from medusa_runtime.decoding import check_tree_fits_heads

        try:
            check_tree_fits_heads(spec, medusa_heads, loaded.model.config.vocab_size)
        except ValueError as err:
            fail(f"{tree}: {err}")
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

    from medusa_runtime.bench import hf_reference
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


@app.command("pack-answers")
def pack_answers_cmd(
    source: Path = typer.Argument(..., help="a train-heads --out folder (its .work/trajectories.jsonl) or such a JSONL file"),
    out: Path = typer.Option(..., "--out", help=".npz to write (e.g. data/answers/smollm2-135m.npz)"),
    model: str = ModelOpt,
    gen_dtype: str = typer.Option(..., "--gen-dtype", help="dtype that wrote the answers (what train-heads was given)"),
    max_new_tokens: int = typer.Option(TrainConfig.max_new_tokens, "--max-new-tokens", help="the answer length limit they were written with"),
    source_note: str = typer.Option("", "--note", help="where the prompts came from, kept in the pack's meta"),
):
    """Pack self-distilled answers as compact token ids, so that train-heads (--answers) starts from them."""
    from .answers import write_answers
    from .distill import read_trajectories

    jsonl = source / ".work" / "trajectories.jsonl" if source.is_dir() else source
    if not jsonl.is_file():
        fail(f"{jsonl}: no such file; pass a train-heads --out folder or its trajectories.jsonl")
    try:
        trajectories = read_trajectories(jsonl)
    except ValueError as err:
        fail(str(err))
    if not trajectories:
        fail(f"{jsonl}: holds no answers yet")
    meta = {"model": model, "gen_dtype": gen_dtype, "max_new_tokens": max_new_tokens, "note": source_note}
    write_answers(trajectories, out, meta)
    tokens = sum(len(t.response_ids) for t in trajectories)
    typer.echo(f"{len(trajectories)} answers ({tokens} answer tokens) packed into {out} ({out.stat().st_size / 1e6:.2f} MB)")


@app.command("train-heads")
def train_heads_cmd(
    out: Path = typer.Option(..., "--out", help="output folder (upstream Medusa checkpoint format)"),
    model: str = ModelOpt,
    data: str = typer.Option("sharegpt", "--data", help="sharegpt | FILE.jsonl of {\"prompt\": ...} or {\"text\": ...} rows"),
    num_heads: int = typer.Option(TrainConfig.num_heads, "--num-heads"),
    num_layers: int = typer.Option(TrainConfig.num_layers, "--num-layers", help="ResBlocks per head"),
    shared_lm_head: bool = typer.Option(TrainConfig.shared_lm_head, "--shared-lm-head/--own-lm-head", help="v2 (reuse the base lm_head) or v1"),
    kind: str = typer.Option(TrainConfig.kind, "--kind", help="plain (upstream Medusa heads) | root-conditioned (heads also read the root "
                             "token) | sequential (and the draft tokens earlier on their path); the last two extend the format"),
    answers: str = typer.Option("auto", "--answers", help="answers pack to start from instead of generating them (auto: the "
                                "shipped pack of the default model when --gen-dtype bfloat16 and --max-new-tokens 128 fit it; none)"),
    init_from: str = typer.Option("", "--init-from", help="heads folder to start from (same sizes; e.g. the shipped heads): "
                                  "its weights and draft vocabulary, new tensors at zero"),
    tokens: int = typer.Option(TrainConfig.tokens, "--tokens", help="response tokens of self-distillation data"),
    epochs: int = typer.Option(TrainConfig.epochs, "--epochs"),
    target: str = typer.Option(TrainConfig.target, "--target", help="greedy (cross-entropy to the base model's argmax) | "
                               "distribution (KL to its whole distribution over the guessable tokens: Hydra++'s teacher loss)"),
    lr: float = typer.Option(TrainConfig.lr, "--lr"),
    batch_size: int = typer.Option(TrainConfig.batch_size, "--batch-size", help="training positions per step"),
    gen_batch_size: int = typer.Option(TrainConfig.gen_batch_size, "--gen-batch-size", help="prompts answered together while generating data"),
    gen_dtype: str = typer.Option(TrainConfig.gen_dtype, "--gen-dtype", help="dtype that writes the answers (bfloat16: faster on CPUs with AVX512-BF16; "
                                  "targets stay the training dtype's own argmax)"),
    max_new_tokens: int = typer.Option(TrainConfig.max_new_tokens, "--max-new-tokens", help="length of each generated answer"),
    max_prompt_tokens: int = typer.Option(TrainConfig.max_prompt_tokens, "--max-prompt-tokens", help="skip longer prompts"),
    num_prompts: int = typer.Option(TrainConfig.prompts, "--num-prompts", help="prompts drawn (a fixed shuffle) to answer; "
                                    "answers stop at --tokens or when every drawn prompt is answered"),
    mtbench_select: str = typer.Option("0:80", "--mtbench-select", help="MT-Bench prompts for the accuracy report ('' to skip)"),
    draft_vocab: int = typer.Option(TrainConfig.draft_vocab, "--draft-vocab", help="guess only from the N most frequent answer tokens (0: whole vocabulary)"),
    save_dtype: str = typer.Option(TrainConfig.save_dtype, "--save-dtype", help="dtype the weights are stored in (and evaluated at)"),
    context_lookup: bool = typer.Option(TrainConfig.context_lookup, "--context-lookup/--no-context-lookup", help="write heads whose "
                                        "guesses start with a token copied from the text (runtime prompt lookup; engines do not do it)"),
    prefix_attention: bool = typer.Option(TrainConfig.prefix_attention, "--prefix-attention/--no-prefix-attention", help="heads read one "
                                          "causal attention layer over the answer's hidden states (Hydra++; trained on whole answers)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace heads already in --out"),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """Train Medusa-1 heads by self-distillation (base frozen) and write them with a README of figures."""
    from .answers import AnswersError, resolve_answers
    from .train_heads import run_train_heads

    cfg = TrainConfig(num_heads=num_heads, num_layers=num_layers, shared_lm_head=shared_lm_head, kind=kind, init_from=init_from, tokens=tokens,
                      answers=resolve_answers(answers, model, gen_dtype, max_new_tokens),
                      epochs=epochs, target=target, lr=lr, batch_size=batch_size, gen_batch_size=gen_batch_size, gen_dtype=gen_dtype,
                      draft_vocab=draft_vocab, save_dtype=save_dtype, context_lookup=context_lookup, prefix_attention=prefix_attention,
                      max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens, prompts=num_prompts)
    try:
        cfg.validate()
    except TrainError as err:
        fail(str(err))
    loaded, _, _ = load_everything(model, "none", dtype, device)
    try:
        result = run_train_heads(loaded, data, cfg, out, overwrite, command_line(), mtbench_select or None)
    except (TrainError, AnswersError) as err:
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


def load_latency_batches_or_fail(path: Path, batch_size: int = 1) -> dict:
    """batch size -> LatencyProfile for every batch size the file holds (``batch_size`` among them)."""
    from .tuning import load_latency_batches

    try:
        return load_latency_batches(path, batch_size)
    except ValueError as err:
        fail(str(err))


def parse_int_list(option: str, text: str, minimum: int = 1) -> list[int]:
    """'1,2,4' -> [1, 2, 4] (sorted, unique), or a clean error naming the option."""
    try:
        values = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        fail(f"{option} {text!r}: a comma-separated list of integers, e.g. 1,2,4,8")
    if not values or values[0] < minimum:
        fail(f"{option} {text!r}: every value must be >= {minimum}")
    return values


@app.command()
def evaluate(
    tree: Path = typer.Argument(..., help="tree spec JSON (or any format 'treeopt import' reads)"),
    stats_file: Path = typer.Argument(..., metavar="STATS"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
):
    """Predicted tokens/step of any tree on any calibration stats: in-sample replay (exact, no independence
    assumption), its range over prompt sets, and the cross-validated figure of a tree built from these stats."""
    from .builder import BuildError
    from .evaluate import evaluate_tree

    stats = load_stats_or_fail(stats_file)
    spec = load_any_tree(tree, stats.num_heads)
    try:
        result = {"tree": str(tree), **evaluate_tree(spec, stats), "stats": str(stats_file)}
    except BuildError as err:
        fail(f"{tree}: {err}")
    if as_json:
        typer.echo(json.dumps(result))
    else:
        low, high = result["interval_90"]
        typer.echo(f"{tree}: {spec.nodes} nodes, depth {spec.depth}\n"
                   f"  in-sample tokens/step (replay on {stats.positions} positions, {result['prompts']} prompts): "
                   f"{result['predicted_tokens_per_step']:.3f}   90% over prompt sets: {low:.3f}-{high:.3f}\n"
                   f"  cross-validated: {result['cross_validated_tokens_per_step']:.3f} ({result['cross_validation']})\n"
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
    trees: list[Path] = typer.Argument(..., help="tree spec JSON (several: printed in turn, drawn side by side)"),
    png: Optional[Path] = typer.Option(None, "--png", help="also draw the tree(s) to this PNG"),
    stats_file: Optional[Path] = typer.Option(None, "--stats", help="label nodes with P(path) from these stats"),
):
    """Print trees as indented text (and draw them; several trees side by side, each titled with its settings)."""
    from .viz import tree_png, tree_text, trees_png

    prob = None
    if stats_file is not None:
        from .builder import path_probability_fn

        prob = path_probability_fn(load_stats_or_fail(stats_file), "empirical")
    drawn = []
    for tree in trees:
        spec = load_any_tree(tree)
        probabilities = None
        if prob is not None:
            probabilities = {p: prob(p) for p in spec.paths}
        elif len(spec.meta.get("path_probabilities", [])) == len(spec.paths):
            probabilities = dict(zip(spec.paths, spec.meta["path_probabilities"]))
        if len(trees) > 1:
            typer.echo(f"== {tree}")
        typer.echo(tree_text(spec, probabilities))
        drawn.append((spec, probabilities))
    if png:
        if len(drawn) == 1:
            tree_png(drawn[0][0], png, drawn[0][1])
        else:
            trees_png(drawn, png)
        typer.echo(f"picture written to {png}")


@app.command()
def export(
    tree: Path = typer.Argument(..., help="tree spec JSON (or any form 'treeopt import' reads)"),
    fmt: str = typer.Option("medusa", "--format", help="medusa | medusa-list | trtllm | trtllm-yaml | trtllm-llmapi | "
                                                       "triton | triton-pbtxt | json | vllm (speculative_config)"),
    num_heads: Optional[int] = typer.Option(None, "--num-heads", help="the engine's Medusa heads: refuse deeper trees "
                                            "(trtllm-llmapi writes it; default: the tree's depth)"),
    max_draft_len: Optional[int] = typer.Option(None, "--max-draft-len", help="TensorRT-LLM formats: the engine's "
                                                "max_draft_len (default 63; trtllm-llmapi: the number of paths)"),
    name: Optional[str] = typer.Option(None, "--name", help="--format medusa: the Python variable (default treeopt_tree)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write here instead of stdout (nothing is written on error)"),
    heads_dir: Optional[Path] = typer.Option(None, "--heads-dir", help="--format vllm: the heads folder 'treeopt "
                                             "export-heads --format vllm' wrote (the speculative_config names it)"),
):
    """Write the tree for an engine, after checking that engine's limits (ranks, depth, draft tokens, sibling gaps);
    formats of an engine that has dropped them get one line naming the releases that run them (docs/engines.md)."""
    from medusa_runtime.spec import TreeSpecError

    from .engines import release_note
    from .formats import FORMATS
    from .vllm import export_text

    spec = load_any_tree(tree)
    warn_for_engine(str(tree), spec.meta.get("stats_provenance") or {}, fmt)
    try:
        text = export_text(spec, fmt, heads_dir, str(tree), num_heads=num_heads, max_draft_len=max_draft_len, name=name)
    except TreeSpecError as err:
        fail(str(err))
    note = release_note(getattr(FORMATS.get(fmt), "target", None))
    if note:
        typer.secho(note, fg=typer.colors.YELLOW, err=True)
    if out is None:
        typer.echo(text, nl=False)
        return
    write_output(out, text)
    typer.echo(f"{fmt}: {spec.nodes}-node tree (depth {spec.depth}) written to {out}")


def warn_for_engine(where: str, provenance: dict, fmt_or_target: str) -> None:
    """Warn when the stats behind a tree measured heads run otherwise than the target engine runs them."""
    from .formats import BUILD_TARGETS, FORMATS, mismatch_warning

    target = fmt_or_target if fmt_or_target in BUILD_TARGETS else getattr(FORMATS.get(fmt_or_target), "target", None)
    warning = mismatch_warning(where, provenance, target) if target is not None else None
    if warning:
        typer.secho(warning, fg=typer.colors.YELLOW, err=True)


@app.command("export-heads")
def export_heads(
    heads: Path = typer.Argument(..., help="Medusa heads folder (plain heads)"),
    fmt: str = typer.Option("vllm", "--format", help="vllm: the checkpoint vLLM's Medusa model loads"),
    out: Path = typer.Option(..., "--out", help="folder to write (config.json, model.safetensors); nothing on error"),
    model: str = ModelOpt,
):
    """Write plain heads as an engine's checkpoint: vLLM's config fields and weight names, a draft vocabulary as its
    token_map; heads it cannot run (sequential, root-conditioned, context lookup, prefix attention) are refused."""
    from medusa_runtime.heads import EngineError

    from .vllm import VLLM_TARGET, vllm_checkpoint, write_vllm_checkpoint

    if fmt != VLLM_TARGET:
        fail(f"--format {fmt!r}: use vllm (upstream Medusa and TensorRT-LLM read the heads folder as it is)")
    loaded, medusa_heads, _ = load_everything(model, str(heads), "float32", "cpu", need_heads=True)
    try:
        checkpoint = vllm_checkpoint(medusa_heads, loaded.model.get_output_embeddings().weight, str(heads))
        write_vllm_checkpoint(checkpoint, out)
    except EngineError as err:
        fail(str(err))
    except OSError as err:
        fail(f"{out}: cannot be written ({err.strerror or err.__class__.__name__}); choose another folder")
    config = checkpoint.config
    typer.echo(f"vllm: {config['num_heads']} heads ({config['truncated_vocab_size']} of {config['vocab_size']} tokens) "
               f"written to {out}; export a chain for them with 'treeopt export TREE --format vllm --heads-dir {out}'")


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
    from medusa_runtime.bench import hf_references

    from .builder import BuildError
    from .sweep import format_auto_vs, format_sweep, run_sweep, sweep_summary, sweep_trees

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
    references = None
    if check:
        references = hf_references(loaded.model, prompt_ids, max_new_tokens, loaded.eos_token_ids, sampling,
                                   desc="sweep: reference decodes")
    results = []
    for plan_b in planned:
        b = plan_b.batch_size
        rows = run_sweep(loaded, medusa_heads, plan_b.trees, prompt_ids, max_new_tokens, batch_size=b,
                         predicted_tokens_per_s=plan_b.predicted_tokens_per_s, sampling=sampling, batching=batching,
                         references=references, rounds=rounds)
        typer.echo(f"batch size {b} ({batching} batches):" if len(batch_list) > 1 or b > 1 else "")
        typer.echo(format_sweep(rows))
        results.append(sweep_summary(plan_b, rows, batching))
        typer.echo(format_auto_vs(results[-1]))
    summary = {"prompts": prompts, "select": select, "max_new_tokens": max_new_tokens, "batches": results}
    if len(results) == 1:  # the single-batch-size layout earlier versions wrote
        summary = {**results[0], "prompts": prompts, "select": select}
    if json_out:
        write_output(json_out, json.dumps(summary, indent=1) + "\n")
    typer.echo(json.dumps([{k: v for k, v in r.items() if k != "rows"} for r in results]))


def main() -> None:  # pragma: no cover
    app()
