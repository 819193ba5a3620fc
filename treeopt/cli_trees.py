"""The ``treeopt`` commands that read and write tree files without a model: ``evaluate`` (predicted tokens/step of
any tree on any stats), ``show`` (text and pictures), ``export`` (an engine's format) and ``import`` (an engine's
tree into a spec). ``cli.py`` registers them on the app; each parses its options, calls one function and prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .cli_inputs import fail, load_any_tree, load_stats_or_fail, warn_for_engine, write_output


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


def import_cmd(
    source: Path = typer.Argument(..., help="medusa_choices (Python/JSON literal), trtllm YAML, Triton string, or dense [1, 7, 6]"),
    out: Path = typer.Option(..., "--out", help="tree spec JSON to write"),
):
    """Convert an engine's tree (never evaluated as code) into a treeopt spec."""
    spec = load_any_tree(source)
    spec.save(out)
    typer.echo(f"{spec.nodes}-node tree (depth {spec.depth}) written to {out}")
