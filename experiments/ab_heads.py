"""Head kinds (plain, root-conditioned, sequential; each with or without prefix attention) trained the same way on
the same answers.

Reads the greedy answers and cached features of a ``treeopt train-heads`` output folder (``--work``, its
``.work``), takes the first ``--answers`` answers (whole feature chunks of 64, so the cache is reused),
trains each of ``--kinds`` with identical settings (from scratch, or all from the same ``--init-from``
heads) and prints each one's held-out top-1/top-5 per head and P(head 2 right | head 1 right) (guesses from
the draft vocabulary, as the runtime makes them; sequential heads read the true path), then one JSON line.
``KIND+prefix`` adds prefix attention (trained on whole answers). With ``--save DIR`` each arm's heads are
written to DIR/ARM (float32, with the context lookup, ready for ``treeopt calibrate`` and ``bench``);
otherwise nothing trained is kept.

    python experiments/ab_heads.py --work runs/heads_v5/.work --answers 640 --epochs 2
    python experiments/ab_heads.py --work runs/heads_seq/.work --answers 3200 --epochs 1 --lr 0.0005 \
        --kinds root-conditioned,sequential --init-from data/heads/smollm2-135m
    python experiments/ab_heads.py --work runs/heads_seq4/.work --answers 3072 --epochs 1 --lr 0.0005 --batch-size 1024 \
        --kinds sequential,sequential+prefix --init-from runs/heads_seq4 --save runs/prefix_ab
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from medusa_runtime.models import load_model
from treeopt.distill import read_trajectories
from treeopt.train_heads import TrainConfig, compute_features, head_accuracy, held_out, new_heads, train_heads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a train-heads output's .work folder")
    parser.add_argument("--answers", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num-layers", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--batch-size", type=int, default=256, help="training rows per step (prefix arms: whole answers up to it)")
    parser.add_argument("--target-mode", default="greedy_path", help="tokens | greedy_path (answers written in another dtype)")
    parser.add_argument("--kinds", default="plain,root-conditioned", help="comma-separated head kinds to compare, each "
                        "optionally with +prefix (prefix attention)")
    parser.add_argument("--init-from", default="", help="heads folder every kind starts from (its draft vocabulary too)")
    parser.add_argument("--save", type=Path, default=None, help="write each arm's heads to SAVE/ARM")
    args = parser.parse_args()

    answers = read_trajectories(args.work / "trajectories.jsonl")
    n = (min(len(answers), args.answers) // 64) * 64
    if n == 0:
        raise SystemExit(f"{args.work / 'trajectories.jsonl'}: fewer than 64 answers; run treeopt train-heads first")
    answers = answers[:n]
    loaded = load_model("smollm2-135m")
    features = compute_features(loaded, answers, 4, args.work / "features", [args.target_mode] * n)
    lm_head = loaded.model.get_output_embeddings()
    mtbench_answers = args.work / "mtbench_trajectories.jsonl"  # what train-heads wrote for its MT-Bench report, if it did
    mtbench = compute_features(loaded, read_trajectories(mtbench_answers), 4, args.work / "features_mtbench") if mtbench_answers.exists() else None
    rows = {}
    for arm in args.kinds.split(","):
        kind, _, extra = arm.partition("+")
        if extra not in ("", "prefix"):
            raise SystemExit(f"--kinds: {arm!r}; write KIND or KIND+prefix")
        cfg = TrainConfig(num_heads=4, num_layers=args.num_layers, epochs=args.epochs, lr=args.lr, kind=kind, batch_size=args.batch_size,
                          init_from=args.init_from, draft_vocab=4096, prefix_attention=extra == "prefix")
        heads, draft = new_heads(loaded, cfg, answers)
        started = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            result = train_heads(heads, features, cfg, Path(tmp) / "state.pt", lm_head.weight,
                                 softmax_vocab=torch.tensor(draft[0]))
        heads.set_draft_vocab(*draft)
        acc = head_accuracy(heads, *held_out(features, cfg))
        rows[arm] = {"top1": [round(a, 3) for a in acc["top1"]], "top5": [round(a, 3) for a in acc["top5"]],
                     "p_head2_given_head1": round(acc["head2_given_head1"], 3),
                     "steps": result["steps"], "train_s": round(time.time() - started, 1)}
        if mtbench is not None:
            on_mtbench = head_accuracy(heads, mtbench.hidden, mtbench.targets, mtbench.roots, mtbench.sequence)
            rows[arm]["mtbench_top1"] = [round(a, 3) for a in on_mtbench["top1"]]
            rows[arm]["mtbench_p_head2_given_head1"] = round(on_mtbench["head2_given_head1"], 3)
        if args.save:
            heads.save(args.save / arm, {"treeopt_ab_heads": {"answers": n, "config": vars(cfg)}})
    print(f"{n} answers, {len(features.hidden)} positions, {args.epochs} epochs; held-out accuracy per head")
    print(f"{'heads':<18} {'top-1':<28} {'top-5':<28} {'P(h2|h1)':<9} steps")
    for arm, row in rows.items():
        print(f"{arm:<18} {' / '.join(f'{a:.3f}' for a in row['top1']):<28} {' / '.join(f'{a:.3f}' for a in row['top5']):<28} "
              f"{row['p_head2_given_head1']:<9.3f} {row['steps']}")
        if "mtbench_top1" in row:
            print(f"{'  on MT-Bench':<18} {' / '.join(f'{a:.3f}' for a in row['mtbench_top1']):<28} {'':<28} "
                  f"{row['mtbench_p_head2_given_head1']:<9.3f}")
    print(json.dumps({"answers": n, "positions": len(features.hidden), "epochs": args.epochs, "lr": args.lr,
                      "init_from": args.init_from, **rows}))


if __name__ == "__main__":
    main()
