"""Where a decoding step's time goes: model forward, lm_head, heads' guesses, K/V move, the rest.

Decodes MT-Bench prompts with the default model, its shipped heads and a tree (default: the empty tree,
i.e. plain decoding through the runtime), timing the runtime's own pieces with wall clocks around its
methods, inside verify steps only (the prompt's prefill is left out). Prints a table of milliseconds per
step, then one JSON line. Not a speed benchmark of its own: the pieces are what `treeopt bench` pays,
split apart.

    python scripts/step_breakdown.py [--tree runs/demo/tree.json] [--select 1:5] [--max-new-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import time

from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.heads import load_heads
from medusa_runtime.kv_cache import TreeKVCache
from medusa_runtime.models import load_model
from medusa_runtime.prompts import render_chat, select_prompts
from medusa_runtime.spec import TreeSpec, load_tree

PIECES = {"_forward": "model forward", "_logits": "lm_head", "_head_candidates": "heads' guesses (one call)",
          "_tree_tokens_by_depth": "heads' guesses (depth by depth)", "commit": "K/V move (cache commit)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=None, help="tree spec JSON (default: the empty tree)")
    parser.add_argument("--heads", default="data/heads/smollm2-135m", help="heads of the default model (the model is fixed)")
    parser.add_argument("--select", default="1:5")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    loaded = load_model("smollm2-135m", device="cpu")
    heads = load_heads(args.heads, loaded.model)
    tree = load_tree(args.tree, heads.num_heads) if args.tree else TreeSpec([])
    decoder = MedusaDecoder(loaded.model, heads, tree, loaded.eos_token_ids)
    spent = dict.fromkeys([*PIECES, "step"], 0.0)  # seconds inside verify steps only (the prefill is not a step)
    in_step = False

    def piece(method, name):
        def wrapper(*a, **k):
            start = time.perf_counter()
            out = method(*a, **k)
            if in_step:
                spent[name] += time.perf_counter() - start
            return out
        return wrapper

    def step(*a, _step=decoder.step, **k):
        nonlocal in_step
        in_step, start = True, time.perf_counter()
        try:
            return _step(*a, **k)
        finally:
            in_step = False
            spent["step"] += time.perf_counter() - start

    for name in PIECES:  # wrap the bound methods of this instance only (the cache is made per prompt: its class)
        if name == "commit":
            TreeKVCache.commit = piece(TreeKVCache.commit, name)
        else:
            setattr(decoder, name, piece(getattr(decoder, name), name))
    decoder.step = step
    prompts = [render_chat(loaded.tokenizer, p) for p in select_prompts("mt-bench", args.select)]
    decoder.generate(prompts[0], 8)  # warm-up
    spent.update(dict.fromkeys(spent, 0.0))
    steps, tokens = 0, 0
    for ids in prompts:
        result = decoder.generate(ids, args.max_new_tokens)
        steps += result.steps - 1  # DecodeResult counts the prefill as a step
        tokens += len(result.tokens) - 1  # the prefill's token
    rows = {label: spent[name] * 1e3 / steps for name, label in PIECES.items()}
    step_ms = spent["step"] * 1e3 / steps
    rows["rest (candidates, acceptance, Python)"] = step_ms - sum(rows.values())
    print(f"tree: {tree.nodes} nodes, {len(prompts)} prompts, {steps} verify steps (prefill excluded), "
          f"{tokens / steps:.3f} tokens/step")
    print(f"{'piece':<40} {'ms/step':>8}")
    for label, ms in rows.items():
        print(f"{label:<40} {ms:>8.2f}")
    print(f"{'whole step':<40} {step_ms:>8.2f}")
    print(json.dumps({"nodes": tree.nodes, "verify_steps": steps, "tokens_per_verify_step": tokens / steps,
                      "ms_per_step": {k: round(v, 3) for k, v in rows.items()}, "step_ms": round(step_ms, 3)}))


if __name__ == "__main__":
    main()
