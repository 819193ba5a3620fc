"""Other scores for coupled drafts than ``logits / tau + G``, on the same sampled rollouts; prints the cross-validated
tokens/step of the built trees (what `build` predicts) for each. Issue 38 keeps the context lookup's proposal first
among coupled drafts (``experiments/lookup_place.py``: first beats second and none); this tries soft versions in
between, and two reshapings of the head's distribution before the noise is added:

- boost b: the proposal's coupled score (``logits / tau + G``) raised by b, so it leads unless the noise strongly
  favours another token (b = 0 is "no proposal", b = infinity is "proposal first");
- mixture l: the head's distribution at tau mixed with a point mass l on the proposal, then Gumbel-ranked with the
  target's noise (a sample from that mixture coupled with the target's draw);
- smooth a: the head's distribution at tau mixed with a uniform one over the draft vocabulary (weight a);
- nucleus n: the head's guesses outside its own top-n probability mass never drafted (their score -infinity).

A proposal outside the draft vocabulary keeps its place first in both. Stats only: run it beside other work.

    python experiments/lookup_coupling.py --answers runs/c/answers_t1.0_0_80_2.jsonl --temperature 1.0 --head-temperature 1.2
"""

from __future__ import annotations

import argparse
import math

import torch

from medusa_runtime.drafts import DraftOrder
from medusa_runtime.draws import KeyedNoise
from medusa_runtime.lookup import merge
from treeopt.calibration import answer_guesses
from treeopt.crossval import cross_validate
from treeopt.stats import CalibrationStats

from lookup_place import SIZES, load_rollouts, rollout_args  # experiments/ is on the path when run as a script

TOPK = 10


def ranks(top: torch.Tensor, future: torch.Tensor) -> list:
    match = top == future[..., None]
    return torch.where(match.any(-1), match.float().argmax(-1), torch.full(future.shape, -1)).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    rollout_args(parser)
    parser.add_argument("--boosts", default="0,1,2,3,4,5,6,8")
    parser.add_argument("--mixtures", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8")
    parser.add_argument("--smooths", default="0.0001,0.001,0.01,0.05")
    parser.add_argument("--nuclei", default="0.9,0.95,0.99")
    args = parser.parse_args()
    loaded, heads, prompts, answers, sampling = load_rollouts(args)
    drafts = DraftOrder(sampling, heads.num_heads, heads.draft_vocab, loaded.device)
    noise = KeyedNoise(args.seed, loaded.model.config.vocab_size, loaded.device)
    columns = heads.draft_vocab.cpu()  # [V'] token id of each column
    column_of = torch.full((loaded.model.config.vocab_size,), -1, dtype=torch.long)
    column_of[columns] = torch.arange(len(columns))
    variants = {"first": None}
    variants.update({f"boost {b}": ("boost", float(b)) for b in args.boosts.split(",") if b})
    variants.update({f"mixture {m}": ("mixture", float(m)) for m in args.mixtures.split(",") if m})
    variants.update({f"smooth {a}": ("smooth", float(a)) for a in args.smooths.split(",") if a})
    variants.update({f"nucleus {n}": ("nucleus", float(n)) for n in args.nuclei.split(",") if n})
    tables = {name: [] for name in variants}
    seen = inside = 0
    for ids in prompts:
        g = answer_guesses(loaded, heads, ids, answers[tuple(ids)])
        R, K = g.future.shape
        order = drafts.along(noise, g.key, g.first, R, K)
        logits = g.logits.cpu()  # [R, K, V']
        scores = order(g.logits).cpu()  # [R, K, V'] logits / tau + G
        noise_part = scores - logits * drafts.inv_tau.cpu()[:K, None]  # [R, K, V'] G
        logp = torch.log_softmax(logits * drafts.inv_tau.cpu()[:K, None], dim=-1)  # [R, K, V'] head at tau
        prop = g.proposals  # [R, K]
        col = torch.where(prop >= 0, column_of[prop.clamp(min=0)], torch.full_like(prop, -1))  # [R, K]
        seen += int((prop >= 0).sum())
        inside += int((col >= 0).sum())
        has = col >= 0
        safe = col.clamp(min=0)[..., None]  # [R, K, 1]
        for name, how in variants.items():
            if how is None:
                top = merge(columns[scores.topk(TOPK, -1).indices], prop)
            else:
                kind, v = how
                if kind == "smooth":
                    s = torch.logaddexp(logp + math.log(1 - v), torch.tensor(math.log(v / logp.shape[-1]))) + noise_part
                elif kind == "nucleus":
                    sorted_p, idx = logp.exp().sort(-1, descending=True)
                    outside_mass = (sorted_p.cumsum(-1) - sorted_p) >= v  # [R, K, V'] in sorted order
                    cut = torch.zeros_like(outside_mass).scatter(-1, idx, outside_mass)
                    s = scores.masked_fill(cut, -math.inf)
                elif kind == "boost":
                    s = scores.clone()
                    bump = torch.where(has, torch.full(has.shape, v), torch.zeros(has.shape))[..., None]
                    s.scatter_add_(-1, safe, bump)
                else:
                    mixed = logp + math.log(1 - v)
                    at = torch.logaddexp(logp.gather(-1, safe) + math.log(1 - v), torch.full(safe.shape, math.log(v)))
                    mixed = torch.where(has[..., None], mixed.scatter(-1, safe, at), logp)
                    s = mixed + noise_part
                top = columns[s.topk(TOPK, -1).indices]
                if kind in ("smooth", "nucleus"):  # the lookup as the runtime puts it
                    tables[name].append(ranks(merge(top, prop), g.future))
                    continue
                outside = (prop >= 0) & ~has  # a proposal outside the draft vocabulary stays first
                top = torch.where(outside[..., None], merge(top, torch.where(outside, prop, -1)), top)
            tables[name].append(ranks(top, g.future))
    print(f"proposals: {seen}, inside the draft vocabulary: {inside} ({100 * inside / max(seen, 1):.1f}%)", flush=True)
    lengths = [len(answers[tuple(p)]) for p in prompts]
    for name in variants:
        stats = CalibrationStats(heads.num_heads, TOPK, tables[name], lengths)
        cv = cross_validate(stats, list(SIZES), "empirical")
        top1 = [sum(1 for t in tables[name] for row in t if row[k] == 0) for k in range(heads.num_heads)]
        print(f"{name:>14}: cross-validated tokens/step at 6 / 16 / 64 nodes "
              + " / ".join(f"{cv.tokens_per_step(n):.3f}" for n in SIZES)
              + "   top-1 counts " + " / ".join(map(str, top1)), flush=True)


if __name__ == "__main__":
    main()
