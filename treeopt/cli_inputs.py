"""What the ``treeopt`` commands share: their common options, and loading a model, heads, a tree, prompts, stats and
latency profiles, and sampling settings, each failing with one line that names the option or file and the fix
(``fail``), plus the warnings a tree gets when it runs with other heads or settings than it was built for.

Heavy modules (torch, transformers) are imported inside the functions, so that commands without a model start fast.
This module runs no command and prints nothing but errors and warnings.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from medusa_runtime.files import write_text_atomic
from medusa_runtime.sampling import ACCEPTANCE_RULES, SamplingConfig, SamplingError

from .admission import BATCHING, DEFAULT_BATCHING

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


def load_stats_or_fail(path: Path):
    from .stats import StatsError, load_stats

    try:
        return load_stats(path)
    except StatsError as err:
        fail(str(err))


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


def warn_for_engine(where: str, provenance: dict, fmt_or_target: str) -> None:
    """Warn when the stats behind a tree measured heads run otherwise than the target engine runs them."""
    from .formats import BUILD_TARGETS, FORMATS, mismatch_warning

    target = fmt_or_target if fmt_or_target in BUILD_TARGETS else getattr(FORMATS.get(fmt_or_target), "target", None)
    warning = mismatch_warning(where, provenance, target) if target is not None else None
    if warning:
        typer.secho(warning, fg=typer.colors.YELLOW, err=True)
