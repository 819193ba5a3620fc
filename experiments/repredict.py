"""A sweep's predictions again, with the current plan code: same stats, profile and measured figures.

``treeopt sweep`` writes each tree's predicted tokens/s beside its measurement as the plan computed it then; after a
change to the plan (2026-12-02: throughput predicted from the profile's medians, not its 10th percentiles) this
recomputes them for the same queue, prints measured, old and new predictions with their errors, and writes the sweep
JSON with the new predictions (for ``treeopt plan --measured``).

    python experiments/repredict.py runs/b2/sweep_cont.json --stats runs/s/t0_cal.json --latency runs/b2/latency.json --out OUT.json
"""

from __future__ import annotations

import argparse
import json

from treeopt.design import TreeRequest, design_tree
from treeopt.plan import budget_tokens_per_s
from treeopt.tuning import BatchLatency
from treeopt.stats import load_stats
from treeopt.tuning import load_latency_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep")
    parser.add_argument("--stats", required=True)
    parser.add_argument("--latency", required=True)
    parser.add_argument("--queue", type=int, default=20, help="requests in the measured queue (--select 1:80:4: 20)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    stats = load_stats(args.stats)
    model = BatchLatency(load_latency_batches(args.latency)).typical()
    doc = json.load(open(args.sweep))
    designed: dict = {}
    errors = []
    for batch in doc.get("batches", [doc]):
        for row in batch["rows"]:
            n = row["paths"]
            if n and n not in designed:
                designed[n] = design_tree(stats, TreeRequest(n))
            new = budget_tokens_per_s(stats, n, batch["batch_size"], model, batch["batching"], designed.get(n), args.queue)
            old, row["predicted_tokens_per_s"] = row["predicted_tokens_per_s"], new
            errors.append(new / row["tokens_per_s"] - 1)
            print(f"batch {batch['batch_size']} {batch['batching']:>10} {row['label']:>10}: measured {row['tokens_per_s']:7.2f}, "
                  f"predicted {old:7.2f} ({old / row['tokens_per_s'] - 1:+.1%}) -> {new:7.2f} ({new / row['tokens_per_s'] - 1:+.1%})")
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(json.dumps({"sweep": args.sweep, "latency": args.latency, "max_abs_error": round(max(map(abs, errors)), 4)}))


if __name__ == "__main__":
    main()
