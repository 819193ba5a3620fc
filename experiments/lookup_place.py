"""Where should the context lookup's proposal go among coupled drafts? Issue 38 kept it first ("unless figures say
otherwise"); this ranks the same sampled rollouts three ways and prints the cross-validated tokens/step of the built
trees (the prediction `build` prints) for each: proposal first (the runtime today), proposal second (after the
coupled first guess), no proposal at all. Stats only: run it beside other work.

    python experiments/lookup_place.py --answers runs/c/answers_t1.0_0_80_2.jsonl --temperature 1.0 --head-temperature 1.2
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from medusa_runtime.drafts import DraftOrder
from medusa_runtime.draws import KeyedNoise
from medusa_runtime.heads import load_heads
from medusa_runtime.models import load_model
from medusa_runtime.prompts import render_chat, select_prompts
from medusa_runtime.sampling import SamplingConfig
from treeopt.calibration import answer_guesses
from treeopt.cli_inputs import DEFAULT_HEADS
from treeopt.crossval import cross_validate
from treeopt.distill import read_trajectories
from treeopt.stats import CalibrationStats

SIZES = (5, 15, 63)


def place(top: torch.Tensor, proposal: torch.Tensor, at: int) -> torch.Tensor:
    """top [R, K, k] ids; proposal [R, K] (-1: none) -> the proposal at index ``at``, the rest in order, cut to k."""
    rows = top.tolist()
    for r, row in enumerate(rows):
        for h, ranked in enumerate(row):
            p = int(proposal[r, h])
            if p < 0:
                continue
            rest = [t for t in ranked if t != p]
            rows[r][h] = (rest[:at] + [p] + rest[at:])[: len(ranked)]
    return torch.tensor(rows)


def rollout_args(parser: argparse.ArgumentParser) -> None:
    """The options of a probe over one calibration's sampled rollouts (also ``coupled_scores.py``'s)."""
    parser.add_argument("--answers", required=True)
    parser.add_argument("--select", default="0:80:2")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--head-temperature", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)


def load_rollouts(args):
    """(loaded model, shipped heads, prompt ids, answers by prompt, sampling settings) of ``rollout_args``."""
    loaded = load_model("smollm2-135m")
    heads = load_heads(DEFAULT_HEADS["smollm2-135m"], loaded.model)
    prompts = [render_chat(loaded.tokenizer, t) for t in select_prompts("mt-bench", args.select)]
    answers = {tuple(t.prompt_ids): t.response_ids for t in read_trajectories(args.answers)}
    sampling = SamplingConfig(temperature=args.temperature, seed=args.seed, head_temperature=(args.head_temperature,))
    return loaded, heads, prompts, answers, sampling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    rollout_args(parser)
    args = parser.parse_args()
    loaded, heads, prompts, answers, sampling = load_rollouts(args)
    variants = {"proposal first": 0, "proposal second": 1, "no proposal": None}
    noise = KeyedNoise(args.seed, loaded.model.config.vocab_size, loaded.device)
    tables = {name: [] for name in variants}
    for rule in ("coupled", "mode"):
        drafts = DraftOrder(replace(sampling, drafts=rule), heads.num_heads, heads.draft_vocab, loaded.device)
        for name in variants:
            tables[name] = []
        for ids in prompts:
            g = answer_guesses(loaded, heads, ids, answers[tuple(ids)])
            R, K = g.future.shape
            top = heads.top_tokens(g.logits, 10, drafts.along(noise, g.key, g.first, R, K)).cpu()
            for name, at in variants.items():
                ranked = top if at is None else place(top, g.proposals, at)
                match = ranked == g.future[..., None]
                tables[name].append(torch.where(match.any(-1), match.float().argmax(-1), torch.full((R, K), -1)).tolist())
        for name in variants:
            stats = CalibrationStats(heads.num_heads, 10, tables[name], [len(answers[tuple(p)]) for p in prompts])
            cv = cross_validate(stats, list(SIZES), "empirical")
            print(f"{rule:>8} drafts, {name:>16}: cross-validated tokens/step at 6 / 16 / 64 nodes "
                  + " / ".join(f"{cv.tokens_per_step(n):.3f}" for n in SIZES), flush=True)


if __name__ == "__main__":
    main()
