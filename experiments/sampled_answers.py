"""An answers pack of *sampled* answers to the first N prompts of another pack, for training heads on the contexts
that sampled decoding shows them (issue 38 item 4's "answers sampled at the target temperature").

The answers are the base model's own, written in the training dtype (float32) with the runtime's keyed draws at
temperature T (``SamplingConfig``, the given seed), so `train-heads --answers OUT --gen-temperature T` reads their tokens as they are
(target mode "tokens") and, with `--target distribution`, learns the base model's distribution along sampled text.
Resumable: the answers go to OUT.jsonl as they are made, and a rerun goes on from there.

    python experiments/sampled_answers.py data/answers/smollm2-135m.npz 2048 1.0 runs/answers_2048_t1.0.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medusa_runtime.models import dtype_name, load_model
from medusa_runtime.sampling import SamplingConfig
from treeopt.answers import read_answers, write_answers
from treeopt.distill import generate_trajectories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pack", type=Path)
    parser.add_argument("count", type=int)
    parser.add_argument("temperature", type=float)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=1, help="not 0: the benches' seed (other prompts, but kept apart)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    source = read_answers(args.pack)
    prompts = [t.prompt_ids for t in source.trajectories[: args.count]]
    loaded = load_model(source.meta["model"], dtype="float32")
    sampling = SamplingConfig(temperature=args.temperature, seed=args.seed)
    jsonl = args.out.with_suffix(".jsonl")
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    done = generate_trajectories(loaded, prompts, jsonl, source.meta["max_new_tokens"], batch_size=args.batch_size, sampling=sampling)
    by_prompt = {tuple(t.prompt_ids): t for t in done}
    answers = [by_prompt[tuple(p)] for p in prompts]
    meta = {"model": source.meta["model"], "gen_dtype": dtype_name(loaded.dtype), "max_new_tokens": source.meta["max_new_tokens"],
            "sampling": sampling.settings(), "note": f"sampled answers to the first {args.count} prompts of {args.pack}"}
    write_answers(answers, args.out, meta)
    print(f"{len(answers)} sampled answers ({sum(len(t.response_ids) for t in answers)} tokens) -> {args.out}")


if __name__ == "__main__":
    main()
