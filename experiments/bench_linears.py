"""Micro-benchmark: the three CPU linear kernels (layout.py) on SmolLM2-135M's linear shapes, per row count.

Random weights of the real shapes (30 layers x q/k/v/o/gate/up/down, plus the 49152 x 576 lm_head, about 540 MB
in fp32, so every pass streams the weights from memory as a decoding step does) run through stock ``F.linear``,
oneDNN's packed GEMM and MKL's packed GEMM (packed for that exact row count), the kernels alternating within each
repeat (``layout.time_kernels``, which ``layout.measure_kernel_table`` uses on fewer weights to make the runtime's choice). Prints a table of the median ms of one pass per row count and kernel, then one JSON line. Needs no model
download.

    python experiments/bench_linears.py [--rows 1,2,3,4,5,6,8,16,32,64] [--repeats 9]
"""

from __future__ import annotations

import argparse
import json

import torch

from medusa_runtime.layout import LAYER_SHAPES, available_kernels, onednn_packing_available, time_kernels

LAYERS, VOCAB, HIDDEN = 30, 49152, 576


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,2,3,4,5,6,8,16,32,64")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    if not onednn_packing_available():
        raise SystemExit("this PyTorch build has no oneDNN: every linear runs stock F.linear, nothing to compare")
    torch.manual_seed(0)
    weights = [torch.rand(out_f, in_f) for _ in range(LAYERS) for out_f, in_f in LAYER_SHAPES] + [torch.rand(VOCAB, HIDDEN)]
    kernels = available_kernels()
    result = {"device": f"cpu ({torch.get_num_threads()} threads)", "torch": torch.__version__, "unit": "ms per pass",
              "rows": {}}
    print(f"{'rows':>5} " + " ".join(f"{k:>8}" for k in kernels) + "  fastest")
    for rows in [int(r) for r in args.rows.split(",")]:
        ms = {name: round(seconds * 1e3, 2) for name, seconds in time_kernels(weights, rows, args.repeats).items()}
        result["rows"][rows] = ms
        print(f"{rows:>5} " + " ".join(f"{ms[k]:>8.1f}" for k in kernels) + f"  {min(ms, key=ms.get)}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
