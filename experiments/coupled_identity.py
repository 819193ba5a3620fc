"""Issue 38's identity floor in one pass per setting: the trees built from one stats file, at batch 1 and 4, each row
checked token for token against its prompt's keyed plain-sampling reference (decoded once, not once per tree and
batch as `bench` would), and the tokens/step each measures. Tokens/step and identity do not depend on timing, so this
runs beside other work; speed is `bench`'s job.

    python experiments/coupled_identity.py STATS.json --trees T6.json,T64.json --batch-sizes 1,4 [--drafts mode]
        [--mode-trees M16.json,M64.json] [--select 1:80:4] [--heads DIR] [--json OUT]

Decodes at the stats' sampling settings and draft rule (their fitted head temperature), unless --drafts says otherwise;
--mode-trees are decoded with mode drafts at batch 1 against the same references (trees from mode-draft stats).
--heads: the heads to decode with (default: those the stats were calibrated with, as their provenance names them).
"""

from __future__ import annotations

import argparse
import json

from medusa_runtime.harness import batches_of
from medusa_runtime.hf_decode import hf_references
from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.heads import load_heads
from medusa_runtime.models import load_model
from medusa_runtime.prompts import render_chat, select_prompts
from medusa_runtime.sampling import SamplingConfig, describe_drafts
from medusa_runtime.spec import load_tree
from treeopt.cli_inputs import DEFAULT_HEADS
from treeopt.stats import load_stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stats")
    parser.add_argument("--trees", required=True)
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--select", default="1:80:4")
    parser.add_argument("--drafts", default=None, choices=["mode", "coupled"])
    parser.add_argument("--mode-trees", default="")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--heads", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    stats = load_stats(args.stats)
    sampling = SamplingConfig.from_settings(stats.sampling()).with_drafts(stats.provenance.get("drafts"))
    if args.drafts:
        sampling = sampling.with_drafts({"rule": args.drafts, "head_temperature": sampling.head_temperature})
    loaded = load_model("smollm2-135m")
    heads_path = args.heads or stats.provenance.get("heads") or DEFAULT_HEADS["smollm2-135m"]
    heads = load_heads(heads_path, loaded.model)
    prompts = [render_chat(loaded.tokenizer, t) for t in select_prompts("mt-bench", args.select)]
    references = hf_references(loaded.model, prompts, args.max_new_tokens, loaded.eos_token_ids, sampling)
    print(f"{sampling.describe()}, {describe_drafts(sampling.draft_settings())}, {len(prompts)} prompts ({args.select}), "
          f"heads {heads_path}")
    rows = []
    runs = [(t, sampling, args.batch_sizes) for t in args.trees.split(",")]
    runs += [(t, sampling.with_drafts({"rule": "mode"}), "1") for t in args.mode_trees.split(",") if t]
    for tree_file, decoding, batch_sizes in runs:
        spec = load_tree(tree_file)
        decoder = MedusaDecoder(loaded.model, heads, spec, loaded.eos_token_ids, decoding)
        for b in map(int, batch_sizes.split(",")):
            tokens = steps = same = 0
            counted: set[int] = set()  # a filled-up last batch repeats the first prompts: count each prompt once
            for batch in batches_of(len(prompts), b):
                results = decoder.generate_batch([prompts[i] for i in batch], args.max_new_tokens)
                for i, result in zip(batch, results):
                    if i not in counted:
                        counted.add(i)
                        tokens, steps = tokens + len(result.tokens), steps + result.steps
                        same += result.tokens == references[i]
            row = {"tree": tree_file, "nodes": spec.nodes, "batch_size": b, "tokens_per_step": tokens / steps,
                   "identical": same / len(prompts), "heads": str(heads_path), "drafts": decoding.draft_settings(), "sampling": decoding.settings()}
            rows.append(row)
            print(f"{tree_file}: {spec.nodes:>3} nodes, {decoding.draft_rule} drafts, batch {b}: tokens/step "
                  f"{row['tokens_per_step']:.3f}  identical {row['identical']:.2f}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(rows, out, indent=1)


if __name__ == "__main__":
    main()
