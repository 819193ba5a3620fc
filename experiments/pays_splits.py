"""Does calibrating at the temperature pay? Trees from sampled stats against trees from greedy stats, many splits.

Issue 31's floor compares, at temperature 1.0, the tree built from temperature-1.0 stats with the tree built from
greedy stats on one 20-prompt bench, against the per-prompt bootstrap range of the paired difference. This probe
asks the same question with less noise. Both pools cover the same prompts (MT-Bench 0:80:2, 1:80:4, 3:80:4), one
calibrated greedy, one at the temperature; a sampled rollout is the text bench decodes (keyed draws), so replaying a
tree on the sampled pool is what bench measures.

1. Random splits: build both trees on the same ``--calibrate`` prompts (each from its own pool, exactly as
   ``treeopt build``), replay both on ``--bench`` other prompts of the sampled pool; the paired difference per split.
2. The fixed calibration (0:80:2) against all 40 other prompts at once: the paired difference and its per-prompt
   bootstrap range, twice the prompts of one bench.

    python experiments/pays_splits.py --sampled runs/s/t1.0_{0_80_2,1_80_4,3_80_4}.json \
        --greedy runs/s/t0_{0_80_2,1_80_4,3_80_4}.json --budgets 5,15,63 --splits 300

Prints a table, then one JSON line. Stats only, no decoding.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from split_study import pooled  # noqa: E402

from treeopt.design import TreeRequest, design_tree  # noqa: E402
from treeopt.stats import replay_tokens_per_step, subset  # noqa: E402


def build(stats, prompts: list[int], budget: int) -> list[tuple[int, ...]]:
    return [tuple(p) for p in design_tree(subset(stats, prompts), TreeRequest(budget=budget)).spec.paths]


def per_prompt(stats, prompts: list[int], paths) -> tuple[list[int], list[float]]:
    """New tokens and steps of each prompt when the tree is replayed on it."""
    tokens = [stats.new_tokens[i] for i in prompts]
    steps = [t / replay_tokens_per_step(subset(stats, [i]), paths) for i, t in zip(prompts, tokens)]
    return tokens, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sampled", nargs="+", required=True, help="stats at the temperature (disjoint prompts)")
    parser.add_argument("--greedy", nargs="+", required=True, help="greedy stats of the same prompts, same order")
    parser.add_argument("--budgets", default="5,15,63")
    parser.add_argument("--splits", type=int, default=300)
    parser.add_argument("--calibrate", type=int, default=40)
    parser.add_argument("--bench", type=int, default=20)
    parser.add_argument("--resamples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    sampled, labels = pooled(args.sampled)
    greedy, greedy_labels = pooled(args.greedy)
    if labels != greedy_labels:
        sys.exit("pays_splits: give the greedy stats of the same prompts in the same order")
    live = [i for i, n in enumerate(sampled.new_tokens) if n > 0 and greedy.new_tokens[i] > 0]
    rng = random.Random(args.seed)
    differences = {n: [] for n in budgets}
    for _ in range(args.splits):
        drawn = rng.sample(live, args.calibrate + args.bench)
        cal, held = sorted(drawn[: args.calibrate]), sorted(drawn[args.calibrate :])
        held_stats = subset(sampled, held)
        for n in budgets:
            differences[n].append(replay_tokens_per_step(held_stats, build(sampled, cal, n))
                                  - replay_tokens_per_step(held_stats, build(greedy, cal, n)))
    # the fixed calibration (the first stats file's prompts) against every other prompt, with a paired bootstrap
    first = len(pooled(args.sampled[:1])[1])
    cal, held = [i for i in live if i < first], [i for i in live if i >= first]
    fixed = {}
    for n in budgets:
        tokens, steps_s = per_prompt(sampled, held, build(sampled, cal, n))
        _, steps_g = per_prompt(sampled, held, build(greedy, cal, n))
        diff = lambda pick: sum(tokens[j] for j in pick) / sum(steps_s[j] for j in pick) - \
            sum(tokens[j] for j in pick) / sum(steps_g[j] for j in pick)  # noqa: E731
        boot = sorted(diff([rng.randrange(len(held)) for _ in held]) for _ in range(args.resamples))
        fixed[n] = {"sampled_tree": sum(tokens) / sum(steps_s), "greedy_tree": sum(tokens) / sum(steps_g),
                    "difference": diff(range(len(held))), "interval_95": [boot[int(0.025 * len(boot))], boot[int(0.975 * len(boot))]],
                    "prompts": len(held)}
    print(f"{args.splits} random splits ({args.calibrate} calibration / {args.bench} bench prompts), and the fixed "
          f"calibration against the {len(held)} other prompts")
    print(f"{'nodes':>5} {'mean diff':>10} {'sd':>7} {'splits >= 0':>11} {'splits > 0':>10}   fixed: sampled / greedy tree, diff [95% bootstrap]")
    summary = {}
    for n in budgets:
        d, f = differences[n], fixed[n]
        summary[n] = {"nodes": n + 1, "mean_difference": statistics.mean(d), "sd": statistics.pstdev(d),
                      "at_least": sum(x >= -1e-12 for x in d) / len(d), "more": sum(x > 1e-12 for x in d) / len(d), "fixed": f}
        s = summary[n]
        print(f"{n + 1:>5} {s['mean_difference']:>+10.4f} {s['sd']:>7.4f} {100 * s['at_least']:>10.0f}% {100 * s['more']:>9.0f}%"
              f"   {f['sampled_tree']:.3f} / {f['greedy_tree']:.3f}, {f['difference']:+.4f} [{f['interval_95'][0]:+.4f}, {f['interval_95'][1]:+.4f}]")
    record = {"sampled": args.sampled, "greedy": args.greedy, "splits": args.splits, "summary": summary}
    if args.out:
        Path(args.out).write_text(json.dumps({**record, "per_split": differences}, indent=1))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
