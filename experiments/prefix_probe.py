"""Would Hydra++-style prefix attention help these heads? An offline probe, before any runtime work.

Trains the same sequential heads twice on the same answers, batches and steps: once reading the base hidden
state h_t (the head kind the runtime runs), once reading z_t, the output of one small causal self-attention
layer over the answer so far (from the last prompt token on) whose input at t is h_t + W e(token t+1), the
root. The layer starts as the identity (its output projections at zero), so both arms start from the same
guesses. Prints top-1 per head and P(head 2 right | head 1 right) for both (the true path fed to every head,
as calibration does) on held-out answers and on MT-Bench (``0:80``, the features train-heads wrote), then
one JSON line. Nothing it trains is kept; it decides whether a
prefix-attention head kind, its checkpoint keys and a KV cache of its own in the runtime are worth building.

    python experiments/prefix_probe.py --work runs/heads_seq2/.work --init-from runs/heads_seq2 --answers 3072
    python experiments/prefix_probe.py --work runs/heads_seq2/.work --init-from runs/heads_seq2 --answers 3072 --prefix-lr 0.003
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn as nn
import torch.nn.functional as F

from medusa_runtime.heads import true_path
from medusa_runtime.models import load_model
from treeopt.distill import read_trajectories
from treeopt.train_heads import Features, compute_features, softmax_targets, split_answers

from probe_arms import add_common_args, arm_heads, first_answers, print_arms, top1_and_joint, train_arm  # experiments/, beside this file


class PrefixLayer(nn.Module):
    """z = x + Attn(norm(x)) + MLP(norm(.)), causal over one answer, x_t = h_t + W e(root_t). Starts as z = h."""

    def __init__(self, hidden: int, heads: int = 9, mlp: int = 1536):
        super().__init__()
        self.heads = heads
        self.root = nn.Linear(hidden, hidden, bias=False)
        nn.init.normal_(self.root.weight, std=0.02)
        self.norm1, self.norm2 = nn.RMSNorm(hidden), nn.RMSNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden, bias=False)
        self.up, self.down = nn.Linear(hidden, mlp, bias=False), nn.Linear(mlp, hidden, bias=False)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.down.weight)

    def forward(self, h: torch.Tensor, root_embedding: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h, root_embedding: [b, T, H]; mask: [b, T] True on real rows -> z [b, T, H]."""
        b, T, H = h.shape
        x = h + self.root(root_embedding)
        q, k, v = self.qkv(self.norm1(x)).view(b, T, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)  # [b, heads, T, d] each
        allowed = torch.ones(T, T, dtype=torch.bool).tril()[None, None] & mask[:, None, None, :]  # [b, 1, T, T]
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # [b, heads, T, d]
        x = x + self.out(attn.transpose(1, 2).reshape(b, T, H))
        return x + self.down(F.silu(self.up(self.norm2(x))))


def sequence_spans(features: Features) -> dict[int, tuple[int, int]]:
    """Answer id -> (first row, end row) of its contiguous rows in the features."""
    seq = features.sequence
    change = torch.nonzero(seq[1:] != seq[:-1]).squeeze(1) + 1
    starts = torch.cat([torch.tensor([0]), change]).tolist()
    ends = starts[1:] + [len(seq)]
    return {int(seq[s]): (s, e) for s, e in zip(starts, ends)}


def padded(features: Features, spans: list[tuple[int, int]]):
    """[b, T, H] hidden, [b, T] roots, [b, T, K] targets (-1 on padding), [b, T] mask."""
    T = max(e - s for s, e in spans)
    b, H, K = len(spans), features.hidden.shape[1], features.targets.shape[1]
    hidden, roots = torch.zeros(b, T, H), torch.zeros(b, T, dtype=torch.long)
    targets, mask = torch.full((b, T, K), -1, dtype=torch.long), torch.zeros(b, T, dtype=torch.bool)
    for i, (s, e) in enumerate(spans):
        hidden[i, : e - s] = features.hidden[s:e].float()
        roots[i, : e - s], targets[i, : e - s], mask[i, : e - s] = features.roots[s:e], features.targets[s:e], True
    return hidden, roots, targets, mask


def run_arm(name, heads, prefix, features, mtbench, train_spans, held_spans, sub_weight, remap, embed, args) -> dict:
    groups = [{"params": [p for p in heads.parameters() if p.requires_grad], "lr": args.lr}]
    if prefix is not None:  # a new layer from scratch learns at its own rate
        groups.append({"params": list(prefix.parameters()), "lr": args.prefix_lr})

    def logits_of(feats: Features, batch, grad: bool):
        """Logits over the draft vocabulary at every row of these answers, their softmax columns (-100: no
        target, or one outside the draft vocabulary) and the raw targets."""
        hidden, roots, targets, mask = padded(feats, batch)
        with torch.set_grad_enabled(grad):
            z = prefix(hidden, embed(roots), mask) if prefix is not None else hidden
            rows = mask.nonzero(as_tuple=True)
            t = targets[rows]  # [N, K]
            out = F.linear(heads.hidden(z[rows], root=roots[rows], path=true_path(t)), sub_weight)  # [N, K, V']
        return out, softmax_targets(t, remap), t

    def epoch_batches(epoch: int) -> list:
        order = torch.randperm(len(train_spans), generator=torch.Generator().manual_seed(epoch)).tolist()
        return [[train_spans[i] for i in order[s : s + args.batch]] for s in range(0, len(order), args.batch)]

    run = train_arm(name, groups, epoch_batches, lambda batch, grad: logits_of(features, batch, grad), heads.num_heads,
                    args.epochs, warmup=50)

    def scored(feats: Features, spans: list[tuple[int, int]]):
        return (logits_of(feats, spans[s : s + args.batch], False) for s in range(0, len(spans), args.batch))

    mtbench_spans = list(sequence_spans(mtbench).values())
    return {"held_out": top1_and_joint(scored(features, held_spans), heads.num_heads),
            "mtbench": top1_and_joint(scored(mtbench, mtbench_spans), heads.num_heads), **run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, answers=3072)
    parser.add_argument("--batch", type=int, default=16, help="answers per step")
    parser.add_argument("--prefix-lr", type=float, default=5e-4, help="the prefix layer's learning rate")
    args = parser.parse_args()
    torch.manual_seed(0)
    answers = first_answers(args.work, args.answers)
    n = len(answers)
    loaded = load_model("smollm2-135m")
    features = compute_features(loaded, answers, 4, args.work / "features", ["greedy_path"] * n)
    # MT-Bench (0:80, 128 new tokens): answers no heads here were trained on; train-heads wrote their features
    mtbench = compute_features(loaded, read_trajectories(args.work / "mtbench_trajectories.jsonl"), 4,
                               args.work / "features_mtbench")
    train_idx, held_idx = split_answers(features, 0.05, 0)
    spans = sequence_spans(features)
    held_ids = set(features.sequence[held_idx].unique().tolist())
    train_spans = [spans[i] for i in sorted(spans) if i not in held_ids]
    held_spans = [spans[i] for i in sorted(held_ids)]
    embed = loaded.model.get_input_embeddings()
    rows = {}
    for arm in ("heads", "prefix+heads"):
        heads, sub_weight, remap = arm_heads(loaded, args.init_from, args.num_layers, answers)
        prefix = PrefixLayer(sub_weight.shape[1]) if arm == "prefix+heads" else None
        rows[arm] = run_arm(arm, heads, prefix, features, mtbench, train_spans, held_spans, sub_weight, remap,
                            lambda ids: embed(ids).detach().float(), args)
    print(f"{n} answers ({len(train_spans)} train, {len(held_spans)} held out), {args.epochs} epoch(s), batches of {args.batch} answers")
    print_arms(rows)
    print(json.dumps({"answers": n, "epochs": args.epochs, "lr": args.lr, "prefix_lr": args.prefix_lr, "init_from": args.init_from, **rows}))


if __name__ == "__main__":
    main()
