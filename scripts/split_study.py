"""How well do built trees and their predictions carry over to other prompts? Random prompt splits.

``build`` predicts tokens/step by cross-validation over its calibration prompts; ``bench`` then measures on
other prompts. One calibrate/bench split says little (a 20-prompt set moves tokens/step by a few percent),
so this script repeats the protocol over many random splits of one pool of calibrated prompts: for each
split it builds each budget on ``--calibrate`` prompts (exactly as ``treeopt build`` does, cross-validation
included), replays the tree on ``--bench`` other prompts (replay equals ``bench``'s tokens/step, see
docs/results.md), and records the prediction error and how the tree does against the reference trees
given with ``--trees`` (e.g. upstream Medusa's 63-node trees). It prints a table, then one JSON line.

The pool is the concatenation of the given stats files (each a ``treeopt calibrate`` output over disjoint
prompts of one source, e.g. MT-Bench ``0:80:2``, ``1:80:4`` and ``3:80:4``: all 80 questions). Each rollout
is labelled with its index in the source (from the stats' ``select``), so ``--fixed`` can name the split
of the issue's protocol and ``--group 10`` reports MT-Bench's 10-question categories.

    python scripts/split_study.py runs/cal/stats.json runs/cal/heldout.json runs/cal/rest.json \
        --trees runs/upstream --budgets 3,5,7,15,31,63,127 --splits 200 --out runs/split_study.json

Nothing here decodes: it reads stats only, in about a second per split.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

from medusa_runtime.prompts import parse_select
from treeopt.builder import DEFAULT_OBJECTIVE, OBJECTIVES
from treeopt.design import TreeRequest, design_tree
from treeopt.formats import import_tree
from treeopt.stats import CalibrationStats, load_stats, replay_tokens_per_step, subset


def pooled(paths: list[str]) -> tuple[CalibrationStats, list[int]]:
    """All rollouts of these stats files in one set, and each rollout's index in the prompt source."""
    parts = [load_stats(p) for p in paths]
    first = parts[0]
    sources = {s.provenance.get("prompt_source") for s in parts}
    if len(sources) != 1 or any((s.num_heads, s.topk) != (first.num_heads, first.topk) for s in parts):
        sys.exit("split_study: the stats files must come from the same heads, --topk and prompt source")
    if any(s.sampling() != first.sampling() for s in parts):
        sys.exit("split_study: the stats files must be calibrated at the same sampling settings (calibrate --temperature ...)")
    rollouts, new_tokens, labels = [], [], []
    for path, stats in zip(paths, parts):
        select = stats.provenance.get("select")
        positions = range(10**6)[parse_select(select)]  # source index of the i-th selected prompt
        labels += [positions[i] for i in stats.indices()]
        rollouts += stats.rollouts
        new_tokens += stats.new_tokens
    if len(set(labels)) != len(labels):
        sys.exit("split_study: the stats files share prompts; give calibrations of disjoint --select ranges")
    provenance = {"pooled_from": paths, "sampling": first.sampling()}
    return CalibrationStats(first.num_heads, first.topk, rollouts, new_tokens, provenance, labels), labels


def reference_trees(folder: str | None, depth: int) -> dict[str, list[tuple[int, ...]]]:
    """Every tree file in ``folder`` (any format ``treeopt import`` reads) that fits the heads' depth."""
    if not folder:
        return {}
    trees = {}
    for path in sorted(Path(folder).iterdir()):
        spec = import_tree(path)
        if spec.depth <= depth:
            trees[path.stem] = [tuple(p) for p in spec.paths]
    return trees


def run_split(stats: CalibrationStats, calibrate: list[int], bench: list[int], budgets: list[int],
              references: dict[str, list], objective: str = DEFAULT_OBJECTIVE) -> dict:
    """Build every budget on ``calibrate`` (as ``treeopt build``), replay on ``bench``."""
    cal, held = subset(stats, calibrate), subset(stats, bench)
    rows = {}
    for n in budgets:
        spec = design_tree(cal, TreeRequest(budget=n, objective=objective)).spec
        measured = replay_tokens_per_step(held, spec.paths)
        predicted = spec.meta["expected_tokens_per_step"]
        rows[n] = {"predicted": predicted, "in_sample": spec.meta["in_sample_tokens_per_step"], "measured": measured,
                   "error": (predicted - measured) / measured}
        if n + 1 in {len(t) + 1 for t in references.values()}:
            rows[n]["references"] = {name: replay_tokens_per_step(held, t) for name, t in references.items() if len(t) == n}
    return rows


def summarise(splits: list[dict], budgets: list[int]) -> dict:
    out = {}
    for n in budgets:
        errors = [s[n]["error"] for s in splits]
        row = {"nodes": n + 1, "mean_error": statistics.mean(errors), "sd_error": statistics.pstdev(errors),
               "within_1pct": sum(abs(e) <= 0.01 for e in errors) / len(errors),
               "mean_measured": statistics.mean(s[n]["measured"] for s in splits)}
        refs = [s[n].get("references") for s in splits if s[n].get("references")]
        if refs:
            row["references"] = {
                name: {"mean_margin": statistics.mean(s[n]["measured"] - r[name] for s, r in zip(splits, refs)),
                       "ours_at_least": sum(s[n]["measured"] >= r[name] - 1e-12 for s, r in zip(splits, refs)) / len(refs)}
                for name in refs[0]}
            row["ours_at_least_all"] = sum(all(s[n]["measured"] >= v - 1e-12 for v in r.values())
                                           for s, r in zip(splits, refs)) / len(refs)
        out[n] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stats", nargs="+", help="calibrate outputs over disjoint prompts of one source")
    parser.add_argument("--trees", help="folder of reference trees to compare against at their size")
    parser.add_argument("--budgets", default="5,63", help="paths per tree (nodes - 1), comma-separated")
    parser.add_argument("--calibrate", type=int, default=40, help="prompts a split calibrates on")
    parser.add_argument("--bench", type=int, default=20, help="other prompts it is measured on")
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument("--objective", default=DEFAULT_OBJECTIVE, choices=OBJECTIVES, help="build's --objective")
    parser.add_argument("--fixed", default="0:80:2/1:80:4", help="the protocol's own split, CAL/BENCH selects ('' for none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the per-split rows and the summary as JSON here")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    stats, labels = pooled(args.stats)
    live = [i for i, n in enumerate(stats.new_tokens) if n > 0]
    if args.calibrate + args.bench > len(live):
        sys.exit(f"split_study: {args.calibrate} + {args.bench} prompts asked, the pool has {len(live)} that generated tokens")
    references = reference_trees(args.trees, stats.num_heads)
    rng = random.Random(args.seed)
    splits = []
    for _ in range(args.splits):
        drawn = rng.sample(live, args.calibrate + args.bench)
        splits.append(run_split(stats, sorted(drawn[: args.calibrate]), sorted(drawn[args.calibrate :]), budgets, references, args.objective))
    summary = summarise(splits, budgets)
    fixed = None
    if args.fixed:
        cal_sel, bench_sel = args.fixed.split("/")
        where = {label: i for i, label in enumerate(labels)}
        pick = lambda sel: [where[j] for j in range(max(labels) + 1)[parse_select(sel)] if j in where]  # noqa: E731
        fixed = run_split(stats, pick(cal_sel), pick(bench_sel), budgets, references, args.objective)
    print(f"{args.splits} random splits of {len(live)} prompts: build ({args.objective}) on {args.calibrate}, "
          f"measure on {args.bench} others")
    print(f"{'nodes':>5} {'mean err':>9} {'sd err':>7} {'|err|<=1%':>9} {'fixed split: pred / meas / err':>32}"
          f" {'ours >= every reference':>24}")
    for n in budgets:
        s = summary[n]
        f = f"{fixed[n]['predicted']:.3f} / {fixed[n]['measured']:.3f} / {100 * fixed[n]['error']:+.1f}%" if fixed else "-"
        refs = f"{100 * s['ours_at_least_all']:.0f}% of splits" if "ours_at_least_all" in s else "-"
        print(f"{n + 1:>5} {100 * s['mean_error']:>+8.2f}% {100 * s['sd_error']:>6.2f}% {100 * s['within_1pct']:>8.0f}% {f:>32} {refs:>24}")
    for n in budgets:
        for name, r in summary[n].get("references", {}).items():
            extra = f" (fixed split: {fixed[n]['measured'] - fixed[n]['references'][name]:+.4f})" if fixed else ""
            print(f"  {n + 1} nodes vs {name}: mean margin {r['mean_margin']:+.4f} tokens/step, ours >= in "
                  f"{100 * r['ours_at_least']:.0f}% of splits{extra}")
    record = {"pool": args.stats, "objective": args.objective, "prompts": len(live), "splits": args.splits, "calibrate": args.calibrate,
              "bench": args.bench, "seed": args.seed, "summary": summary, "fixed": fixed}
    if args.out:
        Path(args.out).write_text(json.dumps({**record, "per_split": splits}, indent=1))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
