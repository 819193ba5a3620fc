"""Two heads sets on the same held-out prompts: each one's tree replayed on its own stats of those prompts, paired per
prompt, with a bootstrap over prompts (``paired_trees.bootstrap_difference``). Stats only (replay equals `bench`'s
tokens/step under keyed draws).

Both heads' stats must rank the *same* rollouts (calibrate with the same --answers files), so every prompt carries
the same text for both and the difference is the heads' alone.

    python experiments/paired_heads.py --tree-a runs/c_samp/tree_t1.0_c_6.json --stats-a runs/c_samp/t1.0_c_1_80_4.json,runs/c_samp/t1.0_c_3_80_4.json \
        --tree-b runs/c/tree_t1.0_c_6.json --stats-b runs/c/t1.0_c_1_80_4.json,runs/c/t1.0_c_3_80_4.json

Prints one line, then one JSON line.
"""

from __future__ import annotations

import argparse
import json

from medusa_runtime.spec import load_tree
from treeopt.stats import load_stats, replay_per_prompt

from paired_trees import bootstrap_difference, tokens_per_step  # experiments/ is on the path when run as a script


def replayed_rows(tree: str, stats_files: str) -> list[dict]:
    """Each prompt of the stats files decoded by replay with this tree: {"new_tokens", "steps"}, in file order."""
    paths = load_tree(tree).paths
    return [{"new_tokens": tokens, "steps": steps} for path in stats_files.split(",")
            for tokens, steps in replay_per_prompt(load_stats(path), paths)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for side in ("a", "b"):
        parser.add_argument(f"--tree-{side}", required=True)
        parser.add_argument(f"--stats-{side}", required=True, help="comma-separated stats files of the held-out prompts")
    parser.add_argument("--resamples", type=int, default=10000)
    args = parser.parse_args()
    a, b = replayed_rows(args.tree_a, args.stats_a), replayed_rows(args.tree_b, args.stats_b)
    if [r["new_tokens"] for r in a] != [r["new_tokens"] for r in b]:
        raise SystemExit("the two stats sets did not rank the same rollouts (their answer lengths differ)")
    everything = list(range(len(a)))
    tps_a, tps_b = tokens_per_step(a, everything), tokens_per_step(b, everything)
    diff, low, high = bootstrap_difference(a, b, args.resamples)
    print(f"A {tps_a:.3f} vs B {tps_b:.3f} tokens/step on {len(a)} prompts: A - B = {diff:+.4f} ({100 * diff / tps_b:+.1f}%), "
          f"95% bootstrap over prompts {low:+.4f} to {high:+.4f}")
    print(json.dumps({"a": args.tree_a, "b": args.tree_b, "a_tokens_per_step": tps_a, "b_tokens_per_step": tps_b,
                      "difference": diff, "interval": [low, high], "prompts": len(a)}))


if __name__ == "__main__":
    main()
