"""What does admitting and retiring requests cost in in-flight batching? Timed around ``MedusaDecoder.serve``.

A queue of ``--requests`` prompts of mixed lengths (windows of ``--min-context``..``--max-context`` tokens of the
MT-Bench questions rendered through the chat template and joined, at seeded random offsets) and mixed token limits
(``--min-new``..``--max-new``) goes through ``--batch-size`` slots with the shipped heads and a small fixed tree.
Every answer is checked token for token against the prompt's own Hugging Face greedy decode (computed once and
kept in ``--references``, so that runs of two versions of the code compare against the same file).

Time is split into the prefills' forwards, admission bookkeeping (a prefilled request joining the batch) and
retirement (a finished request leaving it). With fixed slots (``ServeResults.timings``) those are serve's own
figures; on the code before fixed slots (``DecodeState.join`` / ``keep``, which copied the whole KV cache) the
script times those two methods (and the prefill), so the figure there leaves out the temporary cache each old
prefill allocated (counted in its prefill: the admission figure before is a lower bound). Prints a table and one
JSON line. Run it on the code before fixed slots with that code first on PYTHONPATH (``git archive 8ceea67``).

    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/admission_cost.py --references /tmp/admission_refs.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

import medusa_runtime.decoding as decoding
try:  # the script runs on the code before fixed slots too, where HF decoding lived in bench.py
    from medusa_runtime.hf_decode import hf_references
except ImportError:
    from medusa_runtime.bench import hf_references
from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.heads import load_heads
from medusa_runtime.models import load_model
from medusa_runtime.prompts import render_chat, select_prompts
from medusa_runtime.spec import TreeSpec

TREE = TreeSpec([(0,), (1,), (0, 0), (2,), (0, 1), (0, 0, 0)])  # 7 tokens per row and step


class OldCopyTimer:
    """On the code before fixed slots: seconds spent in DecodeState.join (admission), keep (retirement) and the
    decoder's prefill (its forward and its temporary cache)."""

    def __init__(self):
        self.admission_s = self.retire_s = self.prefill_s = 0.0
        self.joins = 0
        state = decoding.DecodeState
        join, keep, prefill = state.join, state.keep, MedusaDecoder.prefill

        def timed_prefill(decoder, *args, **kwargs):
            t0 = time.perf_counter()
            out = prefill(decoder, *args, **kwargs)
            self.prefill_s += time.perf_counter() - t0
            return out

        def timed_join(this, other):
            t0 = time.perf_counter()
            join(this, other)
            self.admission_s += time.perf_counter() - t0
            self.joins += 1

        def timed_keep(this, rows):
            t0 = time.perf_counter()
            keep(this, rows)
            self.retire_s += time.perf_counter() - t0

        state.join, state.keep, MedusaDecoder.prefill = timed_join, timed_keep, timed_prefill

    def reset(self):
        self.admission_s = self.retire_s = self.prefill_s = 0.0
        self.joins = 0


def queue(tokenizer, count: int, low: int, high: int, new_low: int, new_high: int, seed: int):
    text = [t for p in select_prompts("mt-bench", "0:80") for t in render_chat(tokenizer, p)]
    rng = random.Random(seed)
    prompts, limits = [], []
    for _ in range(count):
        n = rng.randint(low, high)
        start = rng.randrange(len(text) - n)
        prompts.append(text[start : start + n])
        limits.append(rng.randint(new_low, new_high))
    return prompts, limits


def references(path: Path, model, prompts, limits, eos, sampling) -> list[list[int]]:
    key = {"prompts": prompts, "limits": limits}
    if path.exists():
        saved = json.loads(path.read_text())
        if saved["key"] == key:
            return saved["tokens"]
    tokens = hf_references(model, prompts, limits, eos, sampling, desc="references (HF greedy)")
    path.write_text(json.dumps({"key": key, "tokens": tokens}))
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--min-context", type=int, default=800)
    parser.add_argument("--max-context", type=int, default=1000)
    parser.add_argument("--min-new", type=int, default=16)
    parser.add_argument("--max-new", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heads", default="data/heads/smollm2-135m")
    parser.add_argument("--references", default="admission_refs.json")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    loaded = load_model("smollm2-135m", device="cpu")
    heads = load_heads(args.heads, loaded.model)
    decoder = MedusaDecoder(loaded.model, heads, TREE, loaded.eos_token_ids)
    prompts, limits = queue(loaded.tokenizer, args.requests, args.min_context, args.max_context, args.min_new,
                            args.max_new, args.seed)
    expected = references(Path(args.references), loaded.model, prompts, limits, loaded.eos_token_ids, decoder.sampling)
    old = OldCopyTimer() if hasattr(decoding.DecodeState, "join") else None
    decoder.serve(prompts[: args.batch_size], 4, args.batch_size)  # warm-up: kernels, packs
    if old:
        old.reset()
    t0 = time.perf_counter()
    results = decoder.serve(prompts, limits, args.batch_size)
    run_s = time.perf_counter() - t0
    if old:
        code, prefill_s, moves = "copying (before)", old.prefill_s, None
        admission_s, retire_s, admissions = old.admission_s, old.retire_s, old.joins + 1
    else:
        t = results.timings
        code, prefill_s, moves = "fixed slots (after)", t.prefill_s, t.moves
        admission_s, retire_s, admissions = t.admission_s, t.retire_s, t.admissions
    same = sum(r.tokens == ref for r, ref in zip(results, expected)) / len(expected)
    tokens = sum(len(r.tokens) for r in results)
    row = {"code": code, "label": args.label, "batch_size": args.batch_size, "requests": args.requests,
           "context": [min(map(len, prompts)), max(map(len, prompts))], "new_tokens": tokens, "run_s": round(run_s, 3), "prefill_s": round(prefill_s, 3),
           "admission_s": round(admission_s, 4), "retire_s": round(retire_s, 4),
           "bookkeeping_fraction": round((admission_s + retire_s) / run_s, 5), "admissions": admissions,
           "ms_per_admission": round(1e3 * admission_s / admissions, 3), "moves": moves, "identical": same,
           "threads": torch.get_num_threads()}
    print(f"{'code':>20} {'run s':>7} {'prefill s':>9} {'admit s':>8} {'retire s':>8} {'share':>7} {'ms/admit':>9} {'same':>5}")
    print(f"{code:>20} {run_s:>7.2f} {prefill_s:>9.2f} {admission_s:>8.3f} {retire_s:>8.3f} {row['bookkeeping_fraction']:>7.2%} "
          f"{row['ms_per_admission']:>9.2f} {same:>5.2f}")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
