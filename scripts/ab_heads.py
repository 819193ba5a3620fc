"""Head kinds (plain, root-conditioned, sequential) trained the same way on the same answers.

Reads the greedy answers and cached features of a ``treeopt train-heads`` output folder (``--work``, its
``.work``), takes the first ``--answers`` answers (whole feature chunks of 64, so the cache is reused),
trains each of ``--kinds`` with identical settings (from scratch, or all from the same ``--init-from``
heads) and prints each one's held-out top-1/top-5 per head and P(head 2 right | head 1 right) (guesses from
the draft vocabulary, as the runtime makes them; sequential heads read the true path), then one JSON line.
It trains nothing that is kept.

    python scripts/ab_heads.py --work runs/heads_v5/.work --answers 640 --epochs 2
    python scripts/ab_heads.py --work runs/heads_seq/.work --answers 3200 --epochs 1 --lr 0.0005 \
        --kinds root-conditioned,sequential --init-from data/heads/smollm2-135m
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from medusa_runtime.heads import true_path
from medusa_runtime.models import load_model
from treeopt.distill import read_trajectories
from treeopt.train_heads import TrainConfig, compute_features, head_accuracy, held_out, new_heads, train_heads


@torch.inference_mode()
def joint_head2(heads, hidden, targets, roots) -> float:
    """P(head 2 top-1 right | head 1 top-1 right) on these positions, the true path fed to sequential heads."""
    both = hit1 = 0
    for s in range(0, len(hidden), 512):
        t = targets[s : s + 512]
        top = heads.candidates(hidden[s : s + 512].float(), 1, 2, root=roots[s : s + 512], path=true_path(t))[..., 0]  # [B, 2]
        ok = (top == t[:, :2]) & (t[:, :2] >= 0)
        hit1 += int(ok[:, 0].sum())
        both += int((ok[:, 0] & ok[:, 1]).sum())
    return both / max(hit1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a train-heads output's .work folder")
    parser.add_argument("--answers", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num-layers", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--target-mode", default="greedy_path", help="tokens | greedy_path (answers written in another dtype)")
    parser.add_argument("--kinds", default="plain,root-conditioned", help="comma-separated head kinds to compare")
    parser.add_argument("--init-from", default="", help="heads folder every kind starts from (its draft vocabulary too)")
    args = parser.parse_args()

    answers = read_trajectories(args.work / "trajectories.jsonl")
    n = (min(len(answers), args.answers) // 64) * 64
    if n == 0:
        raise SystemExit(f"{args.work / 'trajectories.jsonl'}: fewer than 64 answers; run treeopt train-heads first")
    answers = answers[:n]
    loaded = load_model("smollm2-135m")
    features = compute_features(loaded, answers, 4, args.work / "features", [args.target_mode] * n)
    lm_head = loaded.model.get_output_embeddings()
    rows = {}
    for kind in args.kinds.split(","):
        cfg = TrainConfig(num_heads=4, num_layers=args.num_layers, epochs=args.epochs, lr=args.lr, kind=kind,
                          init_from=args.init_from, draft_vocab=4096)
        heads, draft = new_heads(loaded, cfg, answers)
        started = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            result = train_heads(heads, features, cfg, Path(tmp) / "state.pt", lm_head.weight,
                                 softmax_vocab=torch.tensor(draft[0]))
        heads.set_draft_vocab(*draft)
        acc = head_accuracy(heads, *held_out(features, cfg))
        rows[kind] = {"top1": [round(a, 3) for a in acc["top1"]], "top5": [round(a, 3) for a in acc["top5"]],
                      "p_head2_given_head1": round(joint_head2(heads, *held_out(features, cfg)), 3),
                      "steps": result["steps"], "train_s": round(time.time() - started, 1)}
    print(f"{n} answers, {len(features.hidden)} positions, {args.epochs} epochs; held-out accuracy per head")
    print(f"{'heads':<18} {'top-1':<28} {'top-5':<28} {'P(h2|h1)':<9} steps")
    for kind, row in rows.items():
        print(f"{kind:<18} {' / '.join(f'{a:.3f}' for a in row['top1']):<28} {' / '.join(f'{a:.3f}' for a in row['top5']):<28} "
              f"{row['p_head2_given_head1']:<9.3f} {row['steps']}")
    print(json.dumps({"answers": n, "positions": len(features.hidden), "epochs": args.epochs, "lr": args.lr,
                      "init_from": args.init_from, **rows}))


if __name__ == "__main__":
    main()
