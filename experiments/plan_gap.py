"""Where does a batch's real time go that the plan does not charge? Measured step times against the profile's.

Charges are by the profile's medians (the plan's tokens/s rule; until 2026-12-07 this probe charged its 10th
percentiles). Decodes the prompts as ``bench`` does (static batches of B, or the queue through B slots), timing every
verify step with the number of rows it served and every prefill, then sets each against what the plan charges for it (the
profile's step time at that row count and tree size, its prefill time at that length). Prints, per row count, the
steps, their median (and mean) measured ms and the plan's, then the whole run split into steps, prefills and the time between
them (Python work the plan does not see), and one JSON line.

    python experiments/plan_gap.py --tree T.json --latency L.json --batch-size 8 [--batching static|continuous]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from medusa_runtime.harness import batches_of
from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.heads import load_heads
from medusa_runtime.models import load_model
from medusa_runtime.prompts import render_chat, select_prompts
from medusa_runtime.spec import load_tree
from treeopt.tuning import BatchLatency
from treeopt.tuning import load_latency_batches


class TimedDecoder(MedusaDecoder):
    """The runtime's decoder, recording each verify step (rows, ms) and each prefill (rows, padded length, ms)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps: list[tuple[int, float]] = []
        self.prefills: list[tuple[int, int, float]] = []

    def step(self, state, oracles=None):
        t0 = time.perf_counter()
        out = super().step(state, oracles)
        self.steps.append((state.batch_size, (time.perf_counter() - t0) * 1e3))
        return out

    def admit(self, state, start, prompts, requests, timings=None):
        t0 = time.perf_counter()
        super().admit(state, start, prompts, requests, timings)
        self.prefills.append((len(prompts), max(len(p) for p in prompts), (time.perf_counter() - t0) * 1e3))


def load_decoder(heads_dir: str, tree_path: str, kind=MedusaDecoder):
    """The default model (CPU) and a ``kind`` decoder of this tree with these heads (none for the empty tree)."""
    loaded = load_model("smollm2-135m", device="cpu")
    heads = load_heads(heads_dir, loaded.model)
    tree = load_tree(tree_path, heads.num_heads)
    return loaded, kind(loaded.model, heads if tree.paths else None, tree, loaded.eos_token_ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", required=True)
    parser.add_argument("--latency", required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batching", default="static", choices=("static", "continuous"))
    parser.add_argument("--select", default="1:80:4")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--heads", default="data/heads/smollm2-135m")
    args = parser.parse_args()
    loaded, decoder = load_decoder(args.heads, args.tree, TimedDecoder)
    tree = decoder.tree
    latency = BatchLatency(load_latency_batches(args.latency)).typical()  # the plan's tokens/s rule: medians
    prompts = [render_chat(loaded.tokenizer, p) for p in select_prompts("mt-bench", args.select)]
    decoder.serve(prompts[: args.batch_size], 4, args.batch_size)  # warm-up
    decoder.steps.clear()
    decoder.prefills.clear()
    steps, prefills = decoder.steps, decoder.prefills
    t0 = time.perf_counter()
    if args.batching == "continuous":
        results = decoder.serve(prompts, args.max_new_tokens, args.batch_size)
    else:
        results = [r for batch in batches_of(len(prompts), args.batch_size)
                   for r in decoder.serve([prompts[i] for i in batch], args.max_new_tokens)]
    total = (time.perf_counter() - t0) * 1e3
    tokens = sum(len(r.tokens) for r in results)
    print(f"{'rows':>4} {'steps':>6} {'measured ms':>11} {'mean ms':>8} {'plan ms':>8} {'ratio':>6}")
    by_rows = {}
    for rows in sorted({r for r, _ in steps}):
        ms = [m for r, m in steps if r == rows]
        plan = latency.step_ms(rows, tree.nodes)
        by_rows[rows] = {"steps": len(ms), "median_ms": statistics.median(ms), "mean_ms": statistics.fmean(ms), "plan_ms": plan}
        print(f"{rows:>4} {len(ms):>6} {statistics.median(ms):>11.2f} {statistics.fmean(ms):>8.2f} {plan:>8.2f} "
              f"{statistics.median(ms) / plan:>6.2f}")
    step_ms, prefill_ms = sum(m for _, m in steps), sum(m for _, _, m in prefills)
    planned_steps = sum(latency.step_ms(r, tree.nodes) for r, _ in steps)
    planned_prefill = sum(latency.prefill_ms(r, n) for r, n, _ in prefills)
    print(f"total {total:.0f} ms for {tokens} tokens ({1000 * tokens / total:.2f} tok/s): steps {step_ms:.0f} ms (plan "
          f"{planned_steps:.0f}), prefills {prefill_ms:.0f} ms (plan {planned_prefill:.0f}), between {total - step_ms - prefill_ms:.0f} ms")
    print(json.dumps({"batch_size": args.batch_size, "batching": args.batching, "nodes": tree.nodes, "tokens": tokens,
                      "total_ms": total, "steps_ms": step_ms, "planned_steps_ms": planned_steps, "prefill_ms": prefill_ms,
                      "planned_prefill_ms": planned_prefill, "by_rows": by_rows}))


if __name__ == "__main__":
    main()
