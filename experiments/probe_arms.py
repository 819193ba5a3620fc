"""The A/B harness the offline head-design probes share (prefix_probe.py, row_probe.py).

An arm is a set of parameter groups, a way to cut the training data into batches for an epoch, and a function that
gives, for one batch, the heads' logits over the draft vocabulary, their softmax columns (-100: no target) and the
raw targets. This module trains an arm (AdamW, linear warm-up then cosine, the heads' 0.8^k loss weights) and scores
it; it knows nothing about what the arm feeds its heads.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
from tqdm import tqdm

from medusa_runtime.heads import MedusaHeads
from treeopt.distill import Trajectory, read_trajectories
from treeopt.train_heads import TrainConfig, head_losses, new_heads, softmax_restriction

# (logits [N, K, V'], softmax columns [N, K] with -100 where none, raw targets [N, K] with -1 where none)
Scored = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def train_arm(name: str, groups: list[dict], epoch_batches: Callable[[int], list], logits_of: Callable[[object, bool], Scored],
              num_heads: int, epochs: int, warmup: int) -> dict:
    """Train in place; ``epoch_batches(epoch)`` lists that epoch's batches, ``logits_of(batch, grad)`` scores one.
    Returns {"steps", "train_s"}."""
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    steps = len(epoch_batches(0)) * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    weights = torch.tensor([0.8 ** k for k in range(num_heads)])
    started = time.time()
    bar = tqdm(total=steps, desc=name)
    for epoch in range(epochs):
        for batch in epoch_batches(epoch):
            out, target, _ = logits_of(batch, True)
            loss = (head_losses(out, target) * weights).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return {"steps": steps, "train_s": round(time.time() - started, 1)}


def top1_and_joint(scored: Iterable[Scored], num_heads: int) -> dict:
    """Top-1 per head over every row with a target (one outside the draft vocabulary is a miss, as head_accuracy
    counts it) and P(head 2 right | head 1 right)."""
    hit, both, count = torch.zeros(num_heads), 0, torch.zeros(num_heads)
    for out, target, raw in scored:
        ok = (out.argmax(-1) == target) & (target != -100)  # [N, K]
        hit += ok.sum(0)
        count += (raw >= 0).sum(0)
        both += int((ok[:, 0] & ok[:, 1]).sum())
    return {"top1": [round(a, 4) for a in (hit / count.clamp(min=1)).tolist()],
            "p_head2_given_head1": round(both / max(int(hit[0]), 1), 4)}


def print_arms(rows: dict) -> None:
    """One line per arm and set: top-1 per head and P(h2|h1)."""
    print(f"{'arm':<14} {'set':<9} {'top-1 per head':<30} P(h2|h1)")
    for arm, row in rows.items():
        for part in ("held_out", "mtbench"):
            acc = row[part]
            print(f"{arm:<14} {part:<9} {' / '.join(f'{a:.3f}' for a in acc['top1']):<30} {acc['p_head2_given_head1']:.3f}")


def add_common_args(parser, answers: int) -> None:
    """The flags every probe takes: the work folder, the heads both arms start from, how many answers, the schedule."""
    parser.add_argument("--work", type=Path, required=True, help="a train-heads output's .work folder")
    parser.add_argument("--init-from", required=True, help="sequential heads both arms start from")
    parser.add_argument("--answers", type=int, default=answers, help="the first N answers (a multiple of 64)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-4, help="the heads' learning rate")
    parser.add_argument("--num-layers", type=int, default=3)


def first_answers(work: Path, count: int) -> list[Trajectory]:
    """The first ``count`` answers of a work folder, rounded down to whole feature chunks of 64."""
    answers = read_trajectories(work / "trajectories.jsonl")
    return answers[: (min(len(answers), count) // 64) * 64]


def arm_heads(loaded, init_from: str, num_layers: int, answers: list[Trajectory]) -> tuple[MedusaHeads, torch.Tensor, torch.Tensor]:
    """Sequential heads started from ``init_from`` in training mode, the lm_head rows of their draft vocabulary
    [V', H] and the map token id -> softmax column ([vocab], -1 outside the draft vocabulary)."""
    cfg = TrainConfig(num_heads=4, num_layers=num_layers, kind="sequential", init_from=init_from)
    heads, draft = new_heads(loaded, cfg, answers)
    remap, sub_weight = softmax_restriction(torch.tensor(draft[0]), loaded.model.get_output_embeddings().weight)
    return heads.train(), sub_weight, remap
