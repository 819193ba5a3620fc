"""Does a queue of prompts from 1 to 1,000 tokens decode through the slots without error, each as it decodes alone?

Prompts are the first n tokens of the MT-Bench questions rendered through the chat template and joined (so a 1-token
prompt is a bare template token and a 1,000-token one spans several questions), for n in ``--lengths``. They are
served through ``--batch-size`` slots (``harness.RuntimeArm``: ``MedusaDecoder.serve``) with the given tree, in an order that mixes short and
long, and each answer is compared token for token with the prompt's own Hugging Face decode. Prints one line per
prompt and one JSON line.

    python experiments/mixed_lengths.py --tree runs/b/tree_c4.json --batch-size 4
"""

from __future__ import annotations

import argparse
import json

from medusa_runtime.harness import Queue, References, RuntimeArm, check, identical_fraction, measure
from medusa_runtime.prompts import render_chat, select_prompts

from plan_gap import load_decoder  # experiments/, beside this file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lengths", default="1,1000,2,500,10,200,50,999")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--heads", default="data/heads/smollm2-135m")
    args = parser.parse_args()
    loaded, decoder = load_decoder(args.heads, args.tree)
    tree = decoder.tree
    text = [t for p in select_prompts("mt-bench", "0:80") for t in render_chat(loaded.tokenizer, p)]
    lengths = [int(n) for n in args.lengths.split(",")]
    prompts = [text[:n] for n in lengths]
    queue = Queue.of(prompts, args.max_new_tokens)
    arm = RuntimeArm("served", decoder, args.batch_size)
    runs = measure([arm], queue, [list(range(len(prompts)))], loaded.device, progress=False)
    check(runs, [arm], References(loaded.model, loaded.eos_token_ids, queue, decoder.sampling), margins=False)
    for n, row in zip(lengths, runs[0].rows):
        print(f"prompt {n:>5} tokens: {len(row.tokens):>3} new tokens in {row.steps:>3} forwards, "
              f"{'identical' if row.identical else 'DIFFERS'}")
    print(json.dumps({"tree_nodes": tree.nodes, "batch_size": args.batch_size, "lengths": lengths,
                      "identical": identical_fraction(runs, "served"), "seconds": round(runs[0].seconds, 2)}))


if __name__ == "__main__":
    main()
