"""Two trees on the same prompts: the paired difference of their tokens/step and its per-prompt bootstrap range.

With keyed draws (bench --temperature T --seed S) both trees decode the very same text for every prompt, so the
difference is the trees' alone; the bootstrap over prompts says how far it would move on another prompt set.

    python experiments/paired_trees.py runs/s/bench_t1_from_t1_6.json runs/s/bench_t1_from_t0_6.json

Reads two ``treeopt bench --json`` reports; prints one line and then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random


def tokens_per_step(rows: list[dict], picks: list[int]) -> float:
    return sum(rows[i]["new_tokens"] for i in picks) / sum(rows[i]["steps"] for i in picks)


def bootstrap_difference(rows_a: list[dict], rows_b: list[dict], resamples: int = 10000, level: float = 0.95,
                         seed: int = 0) -> tuple[float, float, float]:
    """Rows of the same prompts ({"new_tokens", "steps"} each) -> (A - B tokens/step over all of them, and the ``level``
    bootstrap range of that difference over prompts)."""
    n = len(rows_a)
    diff = tokens_per_step(rows_a, list(range(n))) - tokens_per_step(rows_b, list(range(n)))
    rng = random.Random(seed)
    boot = sorted(tokens_per_step(rows_a, p) - tokens_per_step(rows_b, p)
                  for p in ([rng.randrange(n) for _ in range(n)] for _ in range(resamples)))
    return diff, boot[int((1 - level) / 2 * len(boot))], boot[int((1 + level) / 2 * len(boot)) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", help="bench --json of tree A")
    parser.add_argument("b", help="bench --json of tree B (same prompts)")
    parser.add_argument("--resamples", type=int, default=10000)
    parser.add_argument("--level", type=float, default=0.95)
    args = parser.parse_args()
    a, b = (json.load(open(path)) for path in (args.a, args.b))
    rows_a, rows_b = a["per_prompt"], b["per_prompt"]
    if [r["index"] for r in rows_a] != [r["index"] for r in rows_b]:
        raise SystemExit("the two reports did not run the same prompts")
    same_text = all(x["new_tokens"] == y["new_tokens"] for x, y in zip(rows_a, rows_b))
    n = len(rows_a)
    diff, low, high = bootstrap_difference(rows_a, rows_b, args.resamples, args.level)
    wins = sum(x["steps"] < y["steps"] for x, y in zip(rows_a, rows_b))
    ties = sum(x["steps"] == y["steps"] for x, y in zip(rows_a, rows_b))
    print(f"A {a['nodes']} nodes {a['tokens_per_step']:.3f} vs B {b['nodes']} nodes {b['tokens_per_step']:.3f} tokens/step: "
          f"A - B = {diff:+.4f} ({100 * diff / b['tokens_per_step']:+.1f}%), {100 * args.level:.0f}% bootstrap over {n} prompts "
          f"{low:+.4f} to {high:+.4f}; A fewer steps on {wins}, equal on {ties}; same token counts: {same_text}")
    print(json.dumps({"a": args.a, "b": args.b, "a_tokens_per_step": a["tokens_per_step"], "b_tokens_per_step": b["tokens_per_step"],
                      "difference": diff, "interval": [low, high], "level": args.level, "prompts": n,
                      "a_fewer_steps": wins, "equal_steps": ties, "same_token_counts": same_text}))


if __name__ == "__main__":
    main()
