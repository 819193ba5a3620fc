"""Plain Medusa heads vs root-conditioned heads, trained the same way on the same answers.

Reads the greedy answers and cached features of a ``treeopt train-heads`` output folder (``--work``, its
``.work``), takes the first ``--answers`` answers (whole feature chunks of 64, so the cache is reused),
trains both kinds of heads with identical settings and prints each one's held-out top-1/top-5 per head
(guesses from the draft vocabulary, as the runtime makes them), then one JSON line. It trains nothing
that is kept.

    python scripts/ab_heads.py --work runs/heads_v5/.work --answers 640 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from medusa_runtime.heads import HeadsConfig, MedusaHeads
from medusa_runtime.models import load_model
from treeopt.distill import read_trajectories
from treeopt.train_heads import TrainConfig, compute_features, draft_vocab_from, head_accuracy, held_out, train_heads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a train-heads output's .work folder")
    parser.add_argument("--answers", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num-layers", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--target-mode", default="greedy_path", help="tokens | greedy_path (answers written in another dtype)")
    args = parser.parse_args()

    answers = read_trajectories(args.work / "trajectories.jsonl")
    n = (min(len(answers), args.answers) // 64) * 64
    if n == 0:
        raise SystemExit(f"{args.work / 'trajectories.jsonl'}: fewer than 64 answers; run treeopt train-heads first")
    answers = answers[:n]
    loaded = load_model("smollm2-135m")
    features = compute_features(loaded, answers, 4, args.work / "features", [args.target_mode] * n)
    draft = draft_vocab_from(answers, 4096)
    lm_head = loaded.model.get_output_embeddings()
    rows = {}
    for kind in ("plain", "root-conditioned"):
        root = kind == "root-conditioned"
        heads = MedusaHeads(HeadsConfig(4, args.num_layers, lm_head.weight.shape[1], lm_head.weight.shape[0], True,
                                        root_conditioned=root))
        heads.init_from_base(lm_head)
        heads.attach_base(loaded.model)
        cfg = TrainConfig(num_heads=4, num_layers=args.num_layers, epochs=args.epochs, lr=args.lr, root_conditioned=root)
        started = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            result = train_heads(heads, features, cfg, Path(tmp) / "state.pt", lm_head.weight,
                                 softmax_vocab=torch.tensor(draft[0]))
        heads.set_draft_vocab(*draft)
        acc = head_accuracy(heads, *held_out(features, cfg))
        rows[kind] = {"top1": [round(a, 3) for a in acc["top1"]], "top5": [round(a, 3) for a in acc["top5"]],
                      "steps": result["steps"], "train_s": round(time.time() - started, 1)}
    print(f"{n} answers, {len(features.hidden)} positions, {args.epochs} epochs; held-out accuracy per head")
    print(f"{'heads':<18} {'top-1':<28} {'top-5':<28} steps")
    for kind, row in rows.items():
        print(f"{kind:<18} {' / '.join(f'{a:.3f}' for a in row['top1']):<28} {' / '.join(f'{a:.3f}' for a in row['top5']):<28} {row['steps']}")
    print(json.dumps({"answers": n, "positions": len(features.hidden), "epochs": args.epochs, **rows}))


if __name__ == "__main__":
    main()
