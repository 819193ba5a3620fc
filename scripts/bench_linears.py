"""Micro-benchmark: stock nn.Linear vs oneDNN-packed PackedLinear on SmolLM2-135M's linear shapes.

Random weights of the real shapes (30 layers x q/k/v/o/gate/up/down, plus the 49152 x 576 lm_head,
about 540 MB in fp32, so every pass streams the weights from memory as a decoding step does). Prints a
table of the median time of one pass per row count, then one JSON line. Needs no model download.

    python scripts/bench_linears.py [--rows 1,2,3,4,5,8,16,32,64] [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from medusa_runtime.layout import PackedLinear, onednn_packing_available

HIDDEN, INTERMEDIATE, KV, LAYERS, VOCAB = 576, 1536, 192, 30, 49152
SHAPES = [(HIDDEN, HIDDEN), (HIDDEN, KV), (HIDDEN, KV), (HIDDEN, HIDDEN),
          (HIDDEN, INTERMEDIATE), (HIDDEN, INTERMEDIATE), (INTERMEDIATE, HIDDEN)]  # (in, out)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,2,3,4,5,8,16,32,64")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    if not onednn_packing_available():
        raise SystemExit("this PyTorch build has no oneDNN: PackedLinear falls back to nn.Linear, nothing to compare")
    torch.manual_seed(0)
    stock = [nn.Linear(i, o, bias=False) for _ in range(LAYERS) for i, o in SHAPES] + [nn.Linear(HIDDEN, VOCAB, bias=False)]
    packed = [PackedLinear.from_linear(m) for m in stock]
    rows_list = [int(r) for r in args.rows.split(",")]
    result = {"device": f"cpu ({torch.get_num_threads()} threads)", "torch": torch.__version__, "rows": {}}
    print(f"{'rows':>5} {'nn.Linear ms':>13} {'packed ms':>10} {'ratio':>6}")
    with torch.inference_mode():
        for rows in rows_list:
            inputs = {HIDDEN: torch.randn(1, rows, HIDDEN), INTERMEDIATE: torch.randn(1, rows, INTERMEDIATE)}

            def run(modules):
                for m in modules:
                    m(inputs[m.in_features])

            a = median_ms(lambda: run(stock), args.repeats)
            b = median_ms(lambda: run(packed), args.repeats)
            result["rows"][rows] = {"linear_ms": round(a, 2), "packed_ms": round(b, 2)}
            print(f"{rows:>5} {a:>13.1f} {b:>10.1f} {a / b:>6.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
