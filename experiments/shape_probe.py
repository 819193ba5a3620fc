"""Offline: could the demo's 3-node tree guess better by deciding per step, from the head's confidence?

The demo's tree for the shipped heads is the chain ``[0], [0, 0]`` (head 1's rank 0, then head 2's rank 0 along it),
with the context lookup's proposal at rank 0 wherever it has one. Two per-step rules keep 3 nodes and the same
verify cost, and are scored here along the true path of the base model's MT-Bench answers (the features
``train-heads`` wrote; every position counted, so the figures read higher than a replay, alike for every arm):

- **gate**: keep the lookup's proposal only where head 1's top-1 probability is below a threshold that depends on the
  match length (2, 3 or 4 tokens); thresholds chosen on the even-numbered answers, scored on the odd ones;
- **shape**: verify the fan ``[0], [1]`` (head 1's two best) instead of the chain where head 1 is unsure (top-1
  probability below a threshold), with or without a lookup proposal.

Prints 1 + P(head 1 right) + P(heads 1 and 2 right) for the chain, the fan, the oracle that picks the better of
the two at every position, and each rule; then one JSON line.

    python experiments/shape_probe.py --work runs/heads_seq4/.work --heads data/heads/smollm2-135m
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from lookup_probe import mtbench_guesses, proposals
from medusa_runtime.heads import true_path
from medusa_runtime.lookup import ContextLookup, merge

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01)  # 1.01: always


def chain_values(guess: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """guess, targets [N, K] (targets -1: none) -> [N]: 1 + [head 1 right] + [heads 1 and 2 right]."""
    hit = (guess == targets) & (targets >= 0)
    return 1 + hit[:, 0].float() + (hit[:, 0] & hit[:, 1]).float()


def chain_value(guess: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor) -> float:
    """The mean of ``chain_values`` over ``rows`` [N] bool."""
    return float(chain_values(guess, targets)[rows].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a train-heads output's .work folder (its MT-Bench answers)")
    parser.add_argument("--heads", required=True, help="sequential heads folder (any lookup in its config is ignored)")
    args = parser.parse_args()
    answers, features, heads, top = mtbench_guesses(args.work, args.heads, topk=2)  # top [N, K, 2]
    with torch.inference_mode():
        logits = heads.guess_logits(features.hidden, None, features.roots, true_path(features.targets))  # [N, K, V']
        confidence = logits.softmax(-1).amax(-1)[:, 0]  # [N]: head 1's top-1 probability
    targets = features.targets  # [N, K]
    by_length = {n: proposals(answers, heads.num_heads, ContextLookup(n, n)) for n in (2, 3, 4)}  # [N, K] each
    proposal, length = torch.full_like(targets, -1), torch.zeros_like(targets)
    for n in (4, 3, 2):  # the longest match wins, as ContextLookup(2, 4) does
        fill = (proposal < 0) & (by_length[n] >= 0)
        proposal, length = torch.where(fill, by_length[n], proposal), torch.where(fill, n, length)
    answer = torch.cat([torch.full((len(t.response_ids) + 1,), i) for i, t in enumerate(answers)])  # [N]
    every, even, odd = torch.ones_like(answer, dtype=torch.bool), answer % 2 == 0, answer % 2 == 1
    head = top[..., 0]  # [N, K]
    shipped = merge(top, proposal)  # [N, K, 2]: the lookup first, as the runtime ranks
    chain = chain_values(shipped[..., 0], targets)  # [N]
    head1 = (shipped[:, 0] == targets[:, :1]) & (targets[:, :1] >= 0)  # [N, 2]: head 1's two guesses right
    fan = 1 + head1.any(-1).float()  # [N]
    rows = {"heads alone, chain": chain_value(head, targets, every), "shipped chain (lookup 2-4)": float(chain.mean()),
            "fan [0], [1]": float(fan.mean()), "oracle: the better of chain and fan": float(torch.maximum(chain, fan).mean())}
    best = None
    for taus in itertools.product(THRESHOLDS, repeat=3):
        tau = torch.zeros(length.shape)
        for n, t in zip((2, 3, 4), taus):
            tau = torch.where(length == n, t, tau)
        gated = torch.where((proposal >= 0) & (confidence[:, None] < tau), proposal, head)
        tuned = chain_value(gated, targets, even)
        if best is None or tuned > best[0]:
            best = (tuned, taus, chain_value(gated, targets, odd), chain_value(gated, targets, every))
    rows[f"gate {best[1]} (tuned on even: {best[0]:.4f})"] = best[3]
    rows["shipped chain, odd answers"], rows["gate, odd answers"] = chain_value(shipped[..., 0], targets, odd), best[2]
    no_proposal = proposal[:, 0] < 0
    for tau in (0.3, 0.5, 0.7, 0.9):
        for where, name in ((no_proposal, "without a proposal"), (every, "anywhere")):
            use_fan = where & (confidence < tau)
            rows[f"fan where head 1 < {tau} ({name}, {float(use_fan.float().mean()):.2f} of steps)"] = float(torch.where(use_fan, fan, chain).mean())
    print(f"{len(targets)} MT-Bench positions, heads {args.heads}; 1 + P(h1) + P(h1, h2) along the true path")
    for arm, value in rows.items():
        print(f"  {value:.4f}  {arm}")
    print(json.dumps({"heads": args.heads, "positions": len(targets), "arms": {k: round(v, 4) for k, v in rows.items()}}))


if __name__ == "__main__":
    main()
