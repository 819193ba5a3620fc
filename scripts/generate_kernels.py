"""HF ``generate`` with the linears' kernel choice against stock ``F.linear`` everywhere (the Intel VM finding).

Loads the default model (its linears packed as the runtime does: ``layout.py``), then times greedy ``generate`` of
64 new tokens on MT-Bench prompts twice: with each linear's own kernel choice, and with every packed copy dropped
(stock ``F.linear`` on every row count). Prints the median ms per token of each, twice, alternating. With
``MEDUSA_LINEAR_KERNELS=onednn`` the first row is "oneDNN's packed kernel on every row", what the runtime ran
before the per-machine choice (41.4 against 32.7 ms/token on the Intel VM).

    MEDUSA_LINEAR_KERNELS=onednn python scripts/generate_kernels.py [--select 1:80:16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medusa_runtime.layout import PackedLinear
from medusa_runtime.models import load_model
from medusa_runtime.prompts import render_chat, select_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--select", default="1:80:16")
    args = parser.parse_args()
    loaded = load_model("smollm2-135m", device="cpu")
    prompts = [render_chat(loaded.tokenizer, p) for p in select_prompts("mt-bench", args.select)]

    def ms_per_token() -> float:
        times = []
        for ids in prompts:
            start = time.perf_counter()
            loaded.model.generate(torch.tensor([ids]), max_new_tokens=64, min_new_tokens=64, do_sample=False)
            times.append((time.perf_counter() - start) / 64)
        return statistics.median(times) * 1e3

    packed = [m for m in loaded.model.modules() if isinstance(m, PackedLinear)]
    with torch.inference_mode():
        ms_per_token()  # warm-up
        for _ in range(2):
            print(f"linears' own choice  {ms_per_token():.2f} ms/token")
            saved = [m._packed for m in packed]
            for m in packed:
                m._packed = None  # stock F.linear
            print(f"stock F.linear       {ms_per_token():.2f} ms/token")
            for m, p in zip(packed, saved):
                m._packed = p


if __name__ == "__main__":
    main()
