"""Two heads sets on the same held-out prompts: each one's tree replayed on its own stats of those prompts, paired per
prompt, with a bootstrap over prompts. Stats only (replay equals `bench`'s tokens/step under keyed draws).

Both heads' stats must rank the *same* rollouts (calibrate with the same --answers files), so every prompt carries
the same text for both and the difference is the heads' alone.

    python experiments/paired_heads.py --tree-a runs/c_samp/tree_t1.0_c_6.json --stats-a runs/c_samp/t1.0_c_1_80_4.json,runs/c_samp/t1.0_c_3_80_4.json \
        --tree-b runs/c/tree_t1.0_c_6.json --stats-b runs/c/t1.0_c_1_80_4.json,runs/c/t1.0_c_3_80_4.json

Prints one line, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random

from medusa_runtime.spec import load_tree
from treeopt.stats import load_stats, replay_per_prompt


def per_prompt(tree: str, stats_files: str) -> tuple[list[tuple[int, int]], list[int]]:
    paths = load_tree(tree).paths
    rows, lengths = [], []
    for path in stats_files.split(","):
        stats = load_stats(path)
        rows += replay_per_prompt(stats, paths)
        lengths += stats.new_tokens
    return rows, lengths


def ratio(rows: list[tuple[int, int]], picks: list[int]) -> float:
    return sum(rows[i][0] for i in picks) / max(sum(rows[i][1] for i in picks), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for side in ("a", "b"):
        parser.add_argument(f"--tree-{side}", required=True)
        parser.add_argument(f"--stats-{side}", required=True, help="comma-separated stats files of the held-out prompts")
    parser.add_argument("--resamples", type=int, default=10000)
    args = parser.parse_args()
    a, len_a = per_prompt(args.tree_a, args.stats_a)
    b, len_b = per_prompt(args.tree_b, args.stats_b)
    if len_a != len_b:
        raise SystemExit("the two stats sets did not rank the same rollouts (their answer lengths differ)")
    n = len(a)
    everything = list(range(n))
    diff = ratio(a, everything) - ratio(b, everything)
    rng = random.Random(0)
    boot = sorted(ratio(a, p) - ratio(b, p) for p in ([rng.randrange(n) for _ in range(n)] for _ in range(args.resamples)))
    low, high = boot[int(0.025 * len(boot))], boot[int(0.975 * len(boot)) - 1]
    print(f"A {ratio(a, everything):.3f} vs B {ratio(b, everything):.3f} tokens/step on {n} prompts: A - B = {diff:+.4f} "
          f"({100 * diff / ratio(b, everything):+.1f}%), 95% bootstrap over prompts {low:+.4f} to {high:+.4f}")
    print(json.dumps({"a": args.tree_a, "b": args.tree_b, "a_tokens_per_step": ratio(a, everything),
                      "b_tokens_per_step": ratio(b, everything), "difference": diff, "interval": [low, high], "prompts": n}))


if __name__ == "__main__":
    main()
