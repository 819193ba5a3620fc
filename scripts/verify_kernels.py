"""Verify-step latency per tree size under several linear-kernel tables (layout.py), timed side by side.

Loads the default model and its shipped heads (or ``--model``/``--heads``), prefills one random prompt of 256 tokens
per (table, tree size),
then runs real verify steps (heads, one forward over the tree, acceptance, K/V move) round-robin: one step of
every size under every table, then the next round, so the machine's drift hits every cell alike. Prints the median
ms per step (a table per kernel table), then one JSON line.

    python scripts/verify_kernels.py [--tables "1-2:stock,3-8:onednn;measured;stock"] [--sizes 1,2,3,4,6,8] [--rounds 12]
        [--model smollm2-135m] [--heads data/heads/smollm2-135m]

A table is a MEDUSA_LINEAR_KERNELS value, or ``measured`` for this machine's measured table. The default compares
the runtime before the per-row-count table (stock on 1-2 rows, oneDNN from 3), the measured table, and stock.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.heads import load_heads
from medusa_runtime.layout import KERNELS_ENV, format_kernel_table, kernel_table, use_kernel_table
from medusa_runtime.models import load_model
from treeopt.profile import synthetic_tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default="1-2:stock,3-8:onednn;measured;stock")
    parser.add_argument("--sizes", default="1,2,3,4,6,8")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--model", default="smollm2-135m", help="as treeopt's --model")
    parser.add_argument("--heads", default="data/heads/smollm2-135m", help="a Medusa heads folder")
    parser.add_argument("--context", type=int, default=256, help="prompt tokens before the timed steps")
    args = parser.parse_args()
    os.environ.pop(KERNELS_ENV, None)
    measured = format_kernel_table(kernel_table())
    tables = [measured if t == "measured" else t for t in args.tables.split(";")]
    sizes = [int(s) for s in args.sizes.split(",")]
    loaded = load_model(args.model, device="cpu")
    heads = load_heads(args.heads, loaded.model)
    prompt = torch.randint(0, loaded.model.config.vocab_size, (args.context,), generator=torch.Generator().manual_seed(0)).tolist()
    runs = []  # (table, nodes, decoder, state)
    for table in tables:
        for nodes in sizes:
            spec = synthetic_tree(nodes, heads.num_heads)
            decoder = MedusaDecoder(loaded.model, heads if nodes > 1 else None, spec, eos_token_ids=())
            runs.append((table, nodes, decoder, decoder.prefill([prompt], (args.rounds + 2) * (spec.depth + 1))))
    ms = {(table, nodes): [] for table, nodes, _, _ in runs}
    with torch.inference_mode():
        for round_ in range(args.rounds + 1):  # round 0 warms up (and makes each size's MKL packs)
            for table, nodes, decoder, state in runs:
                use_kernel_table(table)
                start = time.perf_counter()
                decoder.step(state)
                if round_:
                    ms[table, nodes].append((time.perf_counter() - start) * 1e3)
    medians = {table: {nodes: round(statistics.median(ms[table, nodes]), 2) for nodes in sizes} for table in tables}
    width = max(len(t) for t in tables)
    print(f"{'kernel table':<{width}} " + " ".join(f"{n:>7}" for n in sizes) + "   (tree tokens; median ms per step)")
    for table in tables:
        print(f"{table:<{width}} " + " ".join(f"{medians[table][n]:>7.1f}" for n in sizes))
    print(json.dumps({"device": f"cpu ({torch.get_num_threads()} threads)", "torch": torch.__version__,
                      "measured_table": measured, "rounds": args.rounds, "median_ms": medians}))


if __name__ == "__main__":
    main()
