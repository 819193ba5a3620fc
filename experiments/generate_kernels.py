"""HF ``generate`` under the machine's linear-kernel table against stock ``F.linear`` everywhere (layout.py).

Loads the default model (its linears packed as the runtime does), then times greedy ``generate`` of 64 new tokens
on MT-Bench prompts under two kernel tables, alternating, twice: the machine's own (``MEDUSA_LINEAR_KERNELS`` if
set, else the measured table) and ``stock``. Prints the median ms per token of each. With
``MEDUSA_LINEAR_KERNELS=onednn`` the first row is "oneDNN's packed kernel on every row", what the runtime ran
before the per-machine choice (41.4 against 32.7 ms/token on the Intel VM).

    MEDUSA_LINEAR_KERNELS=onednn python experiments/generate_kernels.py [--select 1:80:16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medusa_runtime.layout import format_kernel_table, kernel_table, use_kernel_table
from medusa_runtime.models import load_model
from medusa_runtime.prompts import render_chat, select_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--select", default="1:80:16")
    args = parser.parse_args()
    loaded = load_model("smollm2-135m", device="cpu")
    prompts = [render_chat(loaded.tokenizer, p) for p in select_prompts("mt-bench", args.select)]
    tables = {"machine's table": format_kernel_table(kernel_table()), "stock F.linear": "stock"}

    def ms_per_token() -> float:
        times = []
        for ids in prompts:
            start = time.perf_counter()
            loaded.model.generate(torch.tensor([ids]), max_new_tokens=64, min_new_tokens=64, do_sample=False)
            times.append((time.perf_counter() - start) / 64)
        return statistics.median(times) * 1e3

    with torch.inference_mode():
        ms_per_token()  # warm-up
        for _ in range(2):
            for name, table in tables.items():
                use_kernel_table(table)
                print(f"{name:16s} {table:40s} {ms_per_token():.2f} ms/token")


if __name__ == "__main__":
    main()
