"""Offline: how much would context lookup add to some heads, on MT-Bench along the true path?

For every position of the base model's greedy MT-Bench answers (the features `train-heads` wrote), each head's
rank-0 guess with and without the lookup's proposal merged in first (``medusa_runtime.lookup``, exactly what the
runtime and calibration do), for several match lengths; prints top-1 per head, top-2 per head and
P(head 2 right | head 1 right). Reads the features only: no decoding, a minute or two on a CPU.

    python experiments/lookup_probe.py --work runs/heads_seq4/.work --heads runs/heads_seq4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from medusa_runtime.heads import load_heads, true_path
from medusa_runtime.lookup import ContextLookup, merge, true_path_proposals
from medusa_runtime.models import load_model
from treeopt.distill import read_trajectories
from treeopt.train_heads import compute_features


def proposals(answers, num_heads: int, lookup: ContextLookup) -> torch.Tensor:
    """[rows, K]: head k's proposal at each feature row (row order of compute_features: per answer, from the last
    prompt token on, one row past the answer), as calibration computes it."""
    return torch.cat([true_path_proposals(torch.tensor(t.prompt_ids + t.response_ids), len(t.prompt_ids), len(t.response_ids) + 1,
                                          num_heads, lookup) for t in answers])


def scores(top: torch.Tensor, targets: torch.Tensor) -> dict:
    """top [N, K, k] ranked guesses, targets [N, K] (-1: none) -> top-1, top-2 per head, P(h2|h1)."""
    valid = targets >= 0
    hit1 = (top[..., 0] == targets) & valid
    hit2 = (top[..., :2] == targets[..., None]).any(-1) & valid
    count = valid.sum(0).clamp(min=1)
    return {"top1": [round(x, 4) for x in (hit1.sum(0) / count).tolist()],
            "top2": [round(x, 4) for x in (hit2.sum(0) / count).tolist()],
            "p_head2_given_head1": round(float((hit1[:, 0] & hit1[:, 1]).sum() / hit1[:, 0].sum().clamp(min=1)), 4)}


def mtbench_guesses(work: Path, heads_path: str, topk: int = 4):
    """The heads' top-``topk`` along the true path at every position of the base model's MT-Bench answers (the
    features ``train-heads`` wrote in ``work``) -> (answers, features, heads, top [rows, K, topk])."""
    loaded = load_model("smollm2-135m")
    heads = load_heads(heads_path, loaded.model)
    answers = read_trajectories(work / "mtbench_trajectories.jsonl")
    features = compute_features(loaded, answers, heads.num_heads, work / "features_mtbench")
    with torch.inference_mode():
        top = heads.candidates(features.hidden.to(loaded.dtype), topk, root=features.roots, path=true_path(features.targets))
    return answers, features, heads, top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a train-heads output's .work folder (its MT-Bench answers)")
    parser.add_argument("--heads", required=True, help="heads folder (any lookup in its config is ignored: arms set their own)")
    parser.add_argument("--matches", default="1:4,2:4,3:4", help="MIN:MAX match lengths to try, comma-separated")
    args = parser.parse_args()
    answers, features, heads, top = mtbench_guesses(args.work, args.heads)
    rows = {"heads alone": scores(top, features.targets)}
    for spec in args.matches.split(","):
        lookup = ContextLookup(*map(int, spec.split(":")))
        rows[f"+ lookup {spec}"] = scores(merge(top, proposals(answers, heads.num_heads, lookup)), features.targets)
    print(f"{len(features.targets)} MT-Bench positions, heads {args.heads}")
    print(f"{'arm':<16} {'top-1 per head':<30} {'top-2 per head':<30} P(h2|h1)")
    for arm, row in rows.items():
        print(f"{arm:<16} {' / '.join(f'{a:.3f}' for a in row['top1']):<30} {' / '.join(f'{a:.3f}' for a in row['top2']):<30} "
              f"{row['p_head2_given_head1']:.3f}")
    print(json.dumps({"heads": args.heads, "positions": len(features.targets), **rows}))


if __name__ == "__main__":
    main()
