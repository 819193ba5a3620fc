"""The main job on the embedded default: calibrate -> profile -> build auto -> bench on held-out prompts.

Every stage writes its file to ``--out`` and is skipped when a file from the same settings is already
there, so an interrupted demo resumes where it stopped. ``sampling`` runs the whole job at a temperature:
sampled calibration rollouts (coupled drafts by default, their head temperature fitted there), the verify step
profiled with its draws, and a bench against HF sampling drafting as calibration ranked.

The tree is ``choice.choose_tree``'s for batch size 1, static batches (what the bench runs), as ``build --budget auto``
chooses it; its predicted tokens/s (the profile's medians) is printed beside the bench's measurement, with their ratio.
This module loads nothing itself (the command line hands it the model and heads).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medusa_runtime.files import write_text_atomic
from medusa_runtime.sampling import SamplingConfig

from .tuning import PROFILE_SIZES


@dataclass
class DemoConfig:
    prompts: str = "mt-bench"
    calibrate_select: str = "0:80:2"
    bench_select: str = "1:80:4"
    max_new_tokens: int = 128
    topk: int = 10
    max_budget: int = 127
    sizes: tuple[int, ...] = tuple(n for n in PROFILE_SIZES if n <= 128)
    repeats: int = 20
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    command: str | None = None  # recorded in the stats' provenance


def _fresh(path: Path, settings: dict) -> bool:
    stamp = path.with_name(path.name + ".settings.json")
    return path.exists() and stamp.exists() and json.loads(stamp.read_text()) == settings


def _stamp(path: Path, settings: dict) -> None:
    write_text_atomic(path.with_name(path.name + ".settings.json"), json.dumps(settings))


def run_demo(loaded, heads, heads_path: str | None, cfg: DemoConfig, out: Path, echo=print) -> dict:
    from medusa_runtime.bench import format_report, run_bench
    from medusa_runtime.prompts import render_chat, select_prompts

    from .calibration import calibrate, heads_fingerprint, stats_provenance
    from .profile import profile_latency
    from .stats import load_stats
    from .choice import Serving, choose_tree
    from .design import TreeRequest
    from .tuning import load_latency_batches
    from .viz import curve_png, tree_png

    out.mkdir(parents=True, exist_ok=True)
    base = {"model": loaded.name, "heads": heads_fingerprint(heads_path), "dtype": str(loaded.dtype), "device": str(loaded.device)}

    def ids_for(select: str) -> list[list[int]]:
        return [render_chat(loaded.tokenizer, p) for p in select_prompts(cfg.prompts, select)]

    # 1. calibrate
    stats_path = out / "stats.json"
    sampling = cfg.sampling
    settings = {**base, "prompts": cfg.prompts, "select": cfg.calibrate_select, "max_new_tokens": cfg.max_new_tokens, "topk": cfg.topk,
                **({"sampling": sampling.settings(), "drafts": sampling.draft_settings()} if sampling.sampled else {})}
    if _fresh(stats_path, settings):
        echo(f"[1/4] calibrate: reusing {stats_path}")
        stats = load_stats(stats_path)
    else:
        echo(f"[1/4] calibrate on {cfg.prompts} --select {cfg.calibrate_select} ({sampling.describe()})")
        ids = ids_for(cfg.calibrate_select)
        stats = calibrate(loaded, heads, ids, cfg.max_new_tokens, cfg.topk,
                          stats_provenance(heads, heads_path, cfg.prompts, cfg.calibrate_select, len(ids), sampling, cfg.command),
                          rollout="batched", sampling=sampling)
        stats.save(stats_path)
        _stamp(stats_path, settings)
    sampling = sampling.with_drafts(stats.provenance.get("drafts"))  # draft as calibration ranked (its fitted head temperature)
    # 2. profile
    latency_path = out / "latency.json"
    settings = {**base, "sizes": list(cfg.sizes), "repeats": cfg.repeats,
                **({"rule": sampling.rule, "drafts": sampling.draft_settings()} if sampling.sampled else {})}
    if _fresh(latency_path, settings):
        echo(f"[2/4] profile: reusing {latency_path}")
    else:
        echo("[2/4] profile verify-step latency on this device")
        write_text_atomic(latency_path, json.dumps(profile_latency(loaded, heads, cfg.sizes, cfg.repeats, sampling=sampling),
                                                   indent=1) + "\n")
        _stamp(latency_path, settings)
    latency = load_latency_batches(latency_path)
    # 3. build auto
    echo("[3/4] build the tree with the best predicted tokens/s")
    choice = choose_tree(stats, TreeRequest(None, max_budget=cfg.max_budget), latency, Serving(1, "static"),
                         {"builder": "treeopt demo"})
    spec = choice.spec
    echo(choice.table())
    spec.save(out / "tree.json")
    tree_png(spec, out / "tree.png", dict(zip(spec.paths, spec.meta["path_probabilities"])))
    curve_png(choice.throughput_curve, out / "curve.png", chosen=spec.nodes,
              baseline_tokens_per_s=choice.plain_tokens_per_s)
    # 4. bench on held-out prompts
    echo(f"[4/4] bench on held-out {cfg.prompts} --select {cfg.bench_select}: HF generate vs Medusa ({spec.nodes} nodes, "
         f"{sampling.describe()})")
    report = run_bench(loaded, heads, spec, ids_for(cfg.bench_select), cfg.max_new_tokens, sampling=sampling)
    report.model, report.heads, report.tree = loaded.name, heads_path, str(out / "tree.json")
    report.prompt_source, report.select = cfg.prompts, cfg.bench_select
    write_text_atomic(out / "report.json", json.dumps(report.to_json(), indent=1) + "\n")
    echo(format_report(report))
    echo(predicted_vs_measured(choice.tokens_per_s, report.tokens_per_s))
    return report.to_json()


def predicted_vs_measured(predicted: float, measured: float) -> str:
    """'Medusa tok/s: predicted 33.83 (profile medians), measured 27.42: measured / predicted 0.81'."""
    return (f"Medusa tok/s: predicted {predicted:.2f} (profile medians), measured {measured:.2f}: "
            f"measured / predicted {measured / predicted:.2f}")
