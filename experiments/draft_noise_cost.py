"""What coupled drafts cost per verify step: drawing the keyed noise rows they read (each (row, position) once; the
target's draws reuse them) and ranking by logits / tau + noise, against the whole step, decoding the same prompts
with mode and coupled drafts. Timers wrap the noise memo and the draft orders; wall-clock, so run it alone.

    python experiments/draft_noise_cost.py TREE.json [--temperature 1.0] [--select 1:80:16] [--head-temperature 1.0]
"""

from __future__ import annotations

import argparse
import time

from medusa_runtime import drafts as drafts_module
from medusa_runtime import draws
from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.heads import load_heads
from medusa_runtime.models import load_model
from medusa_runtime.prompts import render_chat, select_prompts
from medusa_runtime.sampling import SamplingConfig
from medusa_runtime.spec import load_tree
from treeopt.cli_inputs import DEFAULT_HEADS

SPENT = {"noise rows drawn": 0.0, "draft order": 0.0}
COUNT = {"noise rows drawn": 0, "noise rows read": 0}


def timed(name, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        SPENT[name] += time.perf_counter() - start
        return out
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--head-temperature", type=float, default=None)
    parser.add_argument("--select", default="1:80:16")
    args = parser.parse_args()
    original_gumbel = draws.keyed_gumbel

    def counted_gumbel(*a):
        COUNT["noise rows drawn"] += 1
        return original_gumbel(*a)

    draws.keyed_gumbel = timed("noise rows drawn", counted_gumbel)
    original_row = draws.KeyedNoise._row

    def counted_row(self, key, position):
        COUNT["noise rows read"] += 1
        return original_row(self, key, position)

    draws.KeyedNoise._row = counted_row
    for name in ("heads", "head"):
        setattr(drafts_module.DraftOrder, name, timed("draft order", getattr(drafts_module.DraftOrder, name)))
    loaded = load_model("smollm2-135m")
    heads = load_heads(DEFAULT_HEADS["smollm2-135m"], loaded.model)
    prompts = [render_chat(loaded.tokenizer, t) for t in select_prompts("mt-bench", args.select)]
    spec = load_tree(args.tree)
    print(f"{spec.nodes}-node tree, temperature {args.temperature:g}, {len(prompts)} prompts ({args.select}), 128 new tokens")
    print(f"{'drafts':>8} {'steps':>6} {'tok/step':>8} {'ms/step':>8} {'noise ms/step':>13} {'order ms/step':>13} {'rows drawn/step':>15}")
    for rule in ("mode", "coupled", "mode", "coupled"):  # twice, alternating: the first pass warms up
        taus = (args.head_temperature,) if args.head_temperature else None
        sampling = SamplingConfig(temperature=args.temperature, seed=0, drafts=rule, head_temperature=taus)
        decoder = MedusaDecoder(loaded.model, heads, spec, loaded.eos_token_ids, sampling)
        for key in SPENT:
            SPENT[key] = 0.0
        COUNT["noise rows drawn"] = COUNT["noise rows read"] = 0
        start = time.perf_counter()
        results = [decoder.generate(p, 128) for p in prompts]
        total = time.perf_counter() - start
        steps = sum(r.steps for r in results)
        tokens = sum(len(r.tokens) for r in results)
        print(f"{rule:>8} {steps:>6} {tokens / steps:>8.3f} {1000 * total / steps:>8.2f} "
              f"{1000 * SPENT['noise rows drawn'] / steps:>13.3f} {1000 * SPENT['draft order'] / steps:>13.3f} "
              f"{COUNT['noise rows drawn'] / steps:>15.2f}", flush=True)


if __name__ == "__main__":
    main()
