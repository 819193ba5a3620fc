"""Lookup extension, benchmarked: ``treeopt bench`` on MT-Bench 1:80:4 with the shipped heads for several
(tree, extension, minimum match) settings, one after another in one process, each against HF generate.

    python scripts/extension_bench.py runs/ext/tree3.json:4:3:1 runs/ext/tree3.json:0:4:1 ...   # TREE:EXTEND:MIN_MATCH:ONLY_COPIES

ONLY_COPIES 1: extend a row only when every spine token is the lookup's own proposal (a copy in progress); 0: always.
"""

from __future__ import annotations

import sys

from medusa_runtime.bench import run_bench
from medusa_runtime.heads import load_heads
from medusa_runtime.models import load_model
from medusa_runtime.prompts import render_chat, select_prompts
from medusa_runtime.spec import load_tree


def main() -> None:
    loaded = load_model("smollm2-135m", device="cpu")
    heads = load_heads("data/heads/smollm2-135m", loaded.model)
    ids = [render_chat(loaded.tokenizer, p) for p in select_prompts("mt-bench", "1:80:4")]
    for setting in sys.argv[1:]:
        tree, extend, min_match, only_copies = setting.rsplit(":", 3)
        r = run_bench(loaded, heads, load_tree(tree, heads.num_heads), ids, 128, progress=False, extend=int(extend),
                      extend_min_match=int(min_match), extend_only_copies=only_copies == "1")
        print(f"{setting} tok/step {r.tokens_per_step:.3f} nodes {r.nodes_per_step:.2f} speedup {r.speedup:.3f} "
              f"tok/s {r.tokens_per_s:.2f} base {r.baseline_tokens_per_s:.2f} identical {r.identical}", flush=True)


if __name__ == "__main__":
    main()
