"""How many tokens should the heads guess from? Per-head top-1/top-5 of trained heads on MT-Bench greedy
answers, with draft vocabularies of several sizes (0 = the whole vocabulary).

Reads a ``treeopt train-heads`` output's ``.work`` folder (``--work``: the training answers, from which each
draft vocabulary is chosen as train-heads chooses it, and the MT-Bench answers and features its evaluation
cached) and evaluates ``--heads`` (default: the shipped heads) under each size. It changes nothing on disk
except the feature cache, and it does not retrain: heads trained against one draft vocabulary are measured
under others, which is the question a user choosing ``--draft-vocab`` for the runtime asks.

    python experiments/draft_vocab_sizes.py --work runs/heads_v6/.work --sizes 1024,2048,3072,4096,6144,8192,16384,0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medusa_runtime.heads import load_heads
from medusa_runtime.models import load_model
from treeopt.distill import read_trajectories
from treeopt.train_heads import compute_features, draft_vocab_from, head_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a train-heads output's .work folder")
    parser.add_argument("--heads", default="data/heads/smollm2-135m")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--sizes", default="1024,2048,4096,8192,0", help="comma-separated; 0 = whole vocabulary")
    args = parser.parse_args()

    sizes = [int(s) for s in args.sizes.split(",")]
    mtbench_answers = args.work / "mtbench_trajectories.jsonl"
    if not mtbench_answers.exists():
        raise SystemExit(f"{mtbench_answers}: missing; run `treeopt train-heads` (with its MT-Bench evaluation) first")
    loaded = load_model(args.model)
    heads = load_heads(args.heads, loaded.model)
    train_answers = read_trajectories(args.work / "trajectories.jsonl")
    feats = compute_features(loaded, read_trajectories(mtbench_answers), heads.num_heads, args.work / "features_mtbench")

    rows = []
    print(f"{'draft vocab':>11}  {'top-1 per head':<28}  top-5 per head")
    for size in sizes:
        chosen = draft_vocab_from(train_answers, size) if size else None
        if size and chosen is None:
            print(f"{size:>11}  skipped: the training answers hold fewer distinct tokens")
            continue
        heads.set_draft_vocab(*(chosen or (None,)))
        acc = head_accuracy(heads, feats.hidden, feats.targets, feats.roots)
        rows.append({"draft_vocab": size, "top1": acc["top1"], "top5": acc["top5"]})
        label = str(size) if size else "all"
        print(f"{label:>11}  {' / '.join(f'{a:.3f}' for a in acc['top1']):<28}  {' / '.join(f'{a:.3f}' for a in acc['top5'])}")
    print(json.dumps({"heads": args.heads, "positions": len(feats.hidden), "rows": rows}))


if __name__ == "__main__":
    main()
