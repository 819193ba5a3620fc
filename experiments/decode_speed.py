"""Decoding speed of the runtime in one checkout (batch size 1): plain and a tree, to compare two checkouts.

Loads ``medusa_runtime`` from the checkout given (not from the installed one), decodes 5 MT-Bench prompts
(``--select 1:40:8``) at 64 new tokens with the empty tree and with ``--tree``, and prints tokens/s of each
and one JSON line. Run it on two checkouts back to back, e.g. before and after a change to the decoder:

    git worktree add /tmp/old <commit>
    python experiments/decode_speed.py /tmp/old --tree runs/tree6.json
    python experiments/decode_speed.py . --tree runs/tree6.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", help="repository root whose medusa_runtime is timed")
    parser.add_argument("--tree", required=True, help="tree spec JSON (e.g. from treeopt build --budget 5)")
    parser.add_argument("--heads", default=str(Path(__file__).resolve().parents[1] / "data/heads/smollm2-135m"))
    parser.add_argument("--select", default="1:40:8")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    root = str(Path(args.checkout).resolve())
    sys.path.insert(0, root)
    import medusa_runtime
    from medusa_runtime.decoding import MedusaDecoder
    from medusa_runtime.heads import load_heads
    from medusa_runtime.models import load_model
    from medusa_runtime.prompts import render_chat, select_prompts
    from medusa_runtime.spec import TreeSpec, load_tree

    if not medusa_runtime.__file__.startswith(root):
        raise SystemExit(f"medusa_runtime came from {medusa_runtime.__file__}, not from {root}")
    loaded = load_model("smollm2-135m", device="cpu")
    heads = load_heads(args.heads, loaded.model)
    prompts = [render_chat(loaded.tokenizer, p) for p in select_prompts("mt-bench", args.select)]
    rates = {}
    for name, tree in [("plain", TreeSpec([])), (f"{Path(args.tree).name}", load_tree(args.tree, heads.num_heads))]:
        decoder = MedusaDecoder(loaded.model, heads, tree, loaded.eos_token_ids)
        decoder.generate(prompts[0], 8)  # warm-up
        t0, tokens = time.perf_counter(), 0
        for ids in prompts:
            tokens += len(decoder.generate(ids, args.max_new_tokens).tokens)
        rates[name] = round(tokens / (time.perf_counter() - t0), 2)
    for name, rate in rates.items():
        print(f"{name:>20} {rate:>8.2f} tok/s")
    print(json.dumps({"checkout": root, "tokens_per_s": rates}))


if __name__ == "__main__":
    main()
