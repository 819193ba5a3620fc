"""Offline: would a datastore of the model's own answers (REST-style retrieval) add to heads with context lookup?

Builds an n-gram table (n = 2..MAX) from the answers pack (the base model's greedy ShareGPT answers, what the heads
were trained on: each n-gram's most frequent next token, its count and share), then on the MT-Bench features
``train-heads`` wrote scores each head's rank-0 guess along the true path with the context lookup's proposal merged
first (what ships), and with the datastore's proposal merged where the context has none (or first, then the
context), under several count/share thresholds. Prints top-1 per head, P(h2 | h1) and a 3- and 4-node chain's
tokens per step over all positions (no step skipping: higher than a replay). Reads features only; a few minutes.

    python experiments/datastore_probe.py --work runs/heads_seq4/.work --heads data/heads/smollm2-135m [--max-match 4]
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import torch

from lookup_probe import mtbench_guesses, proposals, scores
from medusa_runtime.lookup import ContextLookup, merge
from treeopt.answers import SHIPPED, read_answers


def ngram_table(answers, min_n: int, max_n: int) -> dict[tuple[int, ...], tuple[int, int, int]]:
    """n-gram -> (most frequent next token, its count, all counts) over each answer with its last 3 prompt tokens."""
    counts: dict[tuple[int, ...], collections.Counter] = collections.defaultdict(collections.Counter)
    for t in answers:
        seq = t.prompt_ids[-3:] + t.response_ids
        for n in range(min_n, max_n + 1):
            for s in range(len(seq) - n):
                counts[tuple(seq[s : s + n])][seq[s + n]] += 1
    return {k: (*c.most_common(1)[0], sum(c.values())) for k, c in counts.items()}


def table_proposals(answers, table, num_heads: int, min_n: int, max_n: int, min_count: int, min_share: float) -> torch.Tensor:
    """[rows, K] the table's proposal for head k along the true path (rows as ``proposals``), -1 where none."""
    out = []
    for t in answers:
        ids, start = t.prompt_ids + t.response_ids, len(t.prompt_ids)
        for r in range(len(t.response_ids) + 1):
            row = []
            for k in range(num_heads):
                end, token = min(r + start + 1 + k, len(ids)), -1
                for n in range(max_n, min_n - 1, -1):  # the longest n-gram the table has decides
                    hit = table.get(tuple(ids[end - n : end]))
                    if hit is not None:
                        token = hit[0] if hit[1] >= min_count and hit[1] / hit[2] >= min_share else -1
                        break
                row.append(token)
            out.append(row)
    return torch.tensor(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a train-heads output's .work folder (its MT-Bench answers)")
    parser.add_argument("--heads", required=True)
    parser.add_argument("--max-match", type=int, default=4)
    args = parser.parse_args()
    table = ngram_table(read_answers(SHIPPED["smollm2-135m"]).trajectories, 2, args.max_match)
    answers, features, heads, top = mtbench_guesses(args.work, args.heads)
    context = proposals(answers, heads.num_heads, ContextLookup(2, 4))
    arms = {"heads alone": top, "heads + context lookup (shipped)": merge(top, context)}
    for count, share in [(1, 0.0), (3, 0.3), (2, 0.6), (10, 0.7)]:
        store = table_proposals(answers, table, heads.num_heads, 2, args.max_match, count, share)
        arms[f"context, then store (n>={count}, share>={share})"] = merge(top, torch.where(context >= 0, context, store))
        arms[f"store (n>={count}, share>={share}), then context"] = merge(top, torch.where(store >= 0, store, context))
    print(f"{len(table)} n-grams, {len(features.targets)} MT-Bench positions")
    for name, ranked in arms.items():
        row = scores(ranked, features.targets)
        hit = (ranked[..., 0] == features.targets) & (features.targets >= 0)
        chain = [hit[:, : d + 1].all(1).float().mean().item() for d in range(3)]
        print(f"{name:<44} top-1 {' / '.join(f'{a:.3f}' for a in row['top1'])}  P(h2|h1) {row['p_head2_given_head1']:.3f}  "
              f"3-node chain {1 + sum(chain[:2]):.3f}  4-node chain {1 + sum(chain):.3f}")


if __name__ == "__main__":
    main()
