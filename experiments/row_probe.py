"""Would heads that read more at one position guess better? Offline probes of two designs, before any runtime work.

A sequential head reads h_t (the base model's last hidden state, which a 30-layer 135M model has already shaped into
its own next-token guess), the root and the draft tokens on its path. Each design here adds one input, through a
map that is zero at the start, so that both arms start from the same heads and guesses:

- ``layers`` (EAGLE-3's fusion): h_t + F [norm(m_a); norm(m_b); ...], the middle layers' hidden states at t;
- ``chain`` (EAGLE's feature recurrence, without attention): head i also reads C_i g_{i-1}, head i-1's features
  before the lm_head on the same path, so the deeper heads build on what the shallower ones computed.

It trains the same sequential heads twice on the same answers and rows, once without and once with the design, and
prints top-1 per head and P(head 2 right | head 1 right), the true path fed to every head as calibration does, on
held-out answers and on MT-Bench (``0:80``, 128 new tokens, the trajectories train-heads wrote), then one JSON line.
Nothing it trains is kept.

    python experiments/row_probe.py --design layers --work runs/heads_seq2/.work --init-from runs/heads_seq2 --answers 2048
    python experiments/row_probe.py --design chain --work runs/heads_seq2/.work --init-from runs/heads_seq2 --answers 2048

The middle layers' states are cached in the work folder (``layers_<a-b-c>/``, float16).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from medusa_runtime.heads import MedusaHeads, true_path
from medusa_runtime.models import load_model
from treeopt.distill import Trajectory, read_trajectories
from treeopt.train_heads import Features, base_hidden_states, compute_features, softmax_targets, split_answers

from probe_arms import add_common_args, arm_heads, first_answers, print_arms, top1_and_joint, train_arm  # experiments/, beside this file


@torch.no_grad()
def middle_states(loaded, trajectories: list[Trajectory], layers: list[int], cache_dir: Path, chunk: int = 64) -> torch.Tensor:
    """[M, L, H] float16: hidden_states[l] (the residual stream after layer l) of every row compute_features keeps
    (from the last prompt token on), in its order. Cached per chunk of ``chunk`` answers."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for c, start in enumerate(tqdm(range(0, len(trajectories), chunk), desc=f"layers {layers}")):
        batch = trajectories[start : start + chunk]
        path = cache_dir / f"layers_{c:05d}{'' if len(batch) == chunk else f'_n{len(batch)}'}.pt"
        if path.exists():
            parts.append(torch.load(path, weights_only=True))
            continue
        states = base_hidden_states(loaded.model.base_model, [t.prompt_ids + t.response_ids for t in batch], loaded.device, layers)
        rows = [state[len(t.prompt_ids) - 1 :].half() for state, t in zip(states, batch)]  # [T_i - prompt + 1, L, H]
        part = torch.cat(rows)
        torch.save(part, path)
        parts.append(part)
    return torch.cat(parts)


class LayerFusion(nn.Module):
    """Heads on z = h + F [norm(m_1); ...; norm(m_L)]; F starts at zero, so z = h at the start."""

    def __init__(self, heads: MedusaHeads, num_layers: int):
        super().__init__()
        hidden = heads.config.hidden_size
        self.norms = nn.ModuleList(nn.RMSNorm(hidden) for _ in range(num_layers))
        self.fuse = nn.Linear(num_layers * hidden, hidden, bias=False)
        nn.init.zeros_(self.fuse.weight)

    def forward(self, heads: MedusaHeads, h, mids, root, path) -> torch.Tensor:
        """h: [N, H], mids: [N, L, H], root: [N], path: [N, K-1] -> [N, K, H]."""
        z = h + self.fuse(torch.cat([norm(mids[:, i].float()) for i, norm in enumerate(self.norms)], dim=-1))
        return heads.hidden(z, root=root, path=path)


class ChainedHeads(nn.Module):
    """Head i reads what it reads today plus C_i g_{i-1}, head i-1's output before the lm_head; C_i starts at zero."""

    def __init__(self, heads: MedusaHeads):
        super().__init__()
        hidden = heads.config.hidden_size
        self.chain = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(heads.num_heads - 1))
        for linear in self.chain:
            nn.init.zeros_(linear.weight)

    def forward(self, heads: MedusaHeads, h, mids, root, path) -> torch.Tensor:
        """h: [N, H], root: [N], path: [N, K-1] -> [N, K, H] (mids unused)."""
        out = []
        for i, block in enumerate(heads.heads):
            x = heads.head_input(i, h, root, path)  # [N, H]
            if i:
                x = x + self.chain[i - 1](out[-1])
            out.append(block(x))
        return torch.stack(out, dim=-2)


DESIGNS = ("layers", "chain")


def run_arm(name, heads, design, data, mtbench, train_idx, held_idx, sub_weight, remap, args) -> dict:
    groups = [{"params": [p for p in heads.parameters() if p.requires_grad], "lr": args.lr}]
    if design is not None:  # a new map from scratch learns at its own rate
        groups.append({"params": list(design.parameters()), "lr": args.design_lr})

    def logits_of(feats: Features, mids: torch.Tensor, idx: torch.Tensor, grad: bool):
        """Logits over the draft vocabulary at rows ``idx``, their softmax columns (-100: none) and raw targets."""
        t = feats.targets[idx]  # [N, K]
        with torch.set_grad_enabled(grad):
            h, root, path = feats.hidden[idx].float(), feats.roots[idx], true_path(t)
            if design is None:
                before = heads.hidden(h, root=root, path=path)  # [N, K, H]
            else:
                before = design(heads, h, None if mids is None else mids[idx], root, path)
            out = F.linear(before, sub_weight)  # [N, K, V']
        return out, softmax_targets(t, remap), t

    def epoch_batches(epoch: int) -> list:
        order = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(epoch))]
        return list(order.split(args.batch))

    features, mids = data
    run = train_arm(name, groups, epoch_batches, lambda idx, grad: logits_of(features, mids, idx, grad), heads.num_heads,
                    args.epochs, warmup=100)

    def scored(feats: Features, m: torch.Tensor, idx: torch.Tensor):
        return (logits_of(feats, m, part, False) for part in idx.split(1024))

    mt_features, mt_mids = mtbench
    return {"held_out": top1_and_joint(scored(features, mids, held_idx), heads.num_heads),
            "mtbench": top1_and_joint(scored(mt_features, mt_mids, torch.arange(len(mt_features.hidden))), heads.num_heads),
            **run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, answers=2048)
    parser.add_argument("--design", choices=DESIGNS, required=True)
    parser.add_argument("--layers", default="8,16,24", help="--design layers: hidden_states indices (0: embeddings, 30: last layer)")
    parser.add_argument("--batch", type=int, default=256, help="rows per step")
    parser.add_argument("--design-lr", type=float, default=2e-3, help="the new map's learning rate")
    args = parser.parse_args()
    torch.manual_seed(0)
    layers = [int(x) for x in args.layers.split(",")]
    answers = first_answers(args.work, args.answers)
    n = len(answers)
    loaded = load_model("smollm2-135m")
    tag = "-".join(map(str, layers))
    features = compute_features(loaded, answers, 4, args.work / "features", ["greedy_path"] * n)
    mids = middle_states(loaded, answers, layers, args.work / f"layers_{tag}") if args.design == "layers" else None
    mt_answers = read_trajectories(args.work / "mtbench_trajectories.jsonl")
    mt_features = compute_features(loaded, mt_answers, 4, args.work / "features_mtbench")
    mt_mids = middle_states(loaded, mt_answers, layers, args.work / f"layers_{tag}_mtbench") if args.design == "layers" else None
    for f, m in ((features, mids), (mt_features, mt_mids)):
        if m is not None and len(f.hidden) != len(m):
            raise SystemExit(f"{len(m)} middle-layer rows against {len(f.hidden)} feature rows: delete the layers_{tag} caches")
    train_idx, held_idx = split_answers(features, 0.05, 0)
    rows = {}
    for arm in ("heads", f"{args.design}+heads"):
        heads, sub_weight, remap = arm_heads(loaded, args.init_from, args.num_layers, answers)
        extra = args.design in arm
        design = (LayerFusion(heads, len(layers)) if args.design == "layers" else ChainedHeads(heads)) if extra else None
        rows[arm] = run_arm(arm, heads, design, (features, mids), (mt_features, mt_mids), train_idx, held_idx,
                            sub_weight, remap, args)
    print(f"{n} answers ({len(train_idx)} train rows, {len(held_idx)} held out), design {args.design}, {args.epochs} epoch(s)")
    print_arms(rows)
    print(json.dumps({"answers": n, "design": args.design, "layers": layers, "epochs": args.epochs, "lr": args.lr, "design_lr": args.design_lr,
                      "init_from": args.init_from, **rows}))


if __name__ == "__main__":
    main()
