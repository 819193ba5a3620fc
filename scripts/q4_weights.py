"""Are the default model's fp32 weights its GGUF's Q4_1 blocks exactly, and does PyTorch's int4 CPU kernel stream them fast?

The embedded default is SmolLM2-135M-Instruct converted from a Q4_1 GGUF: every block of 32 weights along a row was
stored as 4-bit codes q with one fp16 scale d and minimum m, w = d * q + m. Loaded in fp32 the weights keep that
structure, so a kernel reading 4-bit codes (8x fewer bytes than fp32) could compute the same products, and a verify
step that streams 540 MB of fp32 weights per forward would be far cheaper. This script checks, for every linear of
the model, that the codes, scales and minimums it recovers rebuild the fp32 weight exactly through PyTorch's int4 CPU
kernel (``torch._weight_int4pack_mm_for_cpu`` on an identity matrix), then times that kernel against stock
``F.linear`` over all 210 layer linears (the lm_head is not Q4_1) on 1-8 rows of fp32 activations, and once more on
bfloat16 activations (``int4_bf16``: the kernel's fast path, which rounds activations and outputs to bfloat16, so
not the fp32 model's arithmetic). Prints a table, then one JSON line. Reads the model only: no heads, no decoding.

    python scripts/q4_weights.py [--rows 1,2,3,4,6,8] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from medusa_runtime.layout import time_alternating
from medusa_runtime.models import load_model

BLOCK = 32  # Q4_1 block length along the input dimension


def q4_1_codes(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [N, K] -> (packed 4-bit codes as ``_convert_weight_to_int4pack_for_cpu`` makes them, scales and zeros
    [K/32, N, 2] for ``_weight_int4pack_mm_for_cpu``, whose dequantisation is (q - 8) * scale + zero)."""
    n, k = weight.shape
    blocks = weight.reshape(n, k // BLOCK, BLOCK)  # [N, B, 32]
    low = blocks.amin(-1)  # [N, B]: m, the code-0 value
    scale = ((blocks.amax(-1) - low) / 15).half().float()  # [N, B]: d, stored in fp16 by the GGUF
    codes = torch.round((blocks - low[..., None]) / scale[..., None].clamp(min=1e-30)).clamp(0, 15).to(torch.int32)
    packed = torch._convert_weight_to_int4pack_for_cpu(codes.reshape(n, k), 1)
    scales_and_zeros = torch.stack([scale.t(), (low + 8 * scale).t()], dim=-1).contiguous()  # [B, N, 2]
    return packed, scales_and_zeros


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,2,3,4,6,8")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    model = load_model("smollm2-135m", device="cpu").model
    linears = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"]
    weights = [m.weight.detach() for m in linears]
    with torch.inference_mode():
        int4 = [q4_1_codes(w) for w in weights]
        exact = sum(torch.equal(torch._weight_int4pack_mm_for_cpu(torch.eye(w.shape[1]), p, BLOCK, sz).t(), w)
                    for w, (p, sz) in zip(weights, int4))
        print(f"{exact} of {len(weights)} linears rebuilt exactly from 4-bit codes "
              f"({sum(w.numel() for w in weights) * 4 / 1e6:.0f} MB fp32, {sum(w.numel() for w in weights) / 2e6:.0f} MB of codes)")
        result = {"device": f"cpu ({torch.get_num_threads()} threads)", "torch": torch.__version__, "linears": len(weights),
                  "exact": exact, "unit": "ms per pass over the layer linears", "rows": {}}
        int4_bf16 = [(p, sz.bfloat16()) for p, sz in int4]
        print(f"{'rows':>5} {'stock':>8} {'int4':>8} {'int4_bf16':>10}")
        for rows in [int(r) for r in args.rows.split(",")]:
            inputs = {k: torch.randn(rows, k) for k in {w.shape[1] for w in weights}}
            inputs_bf16 = {k: x.bfloat16() for k, x in inputs.items()}
            runs = {"stock": lambda: [F.linear(inputs[w.shape[1]], w) for w in weights],
                    "int4": lambda: [torch._weight_int4pack_mm_for_cpu(inputs[w.shape[1]], p, BLOCK, sz)
                                     for w, (p, sz) in zip(weights, int4)],
                    "int4_bf16": lambda: [torch._weight_int4pack_mm_for_cpu(inputs_bf16[w.shape[1]], p, BLOCK, sz)
                                          for w, (p, sz) in zip(weights, int4_bf16)]}
            medians = {name: round(seconds * 1e3, 1) for name, seconds in time_alternating(runs, args.repeats).items()}
            result["rows"][rows] = medians
            print(f"{rows:>5} {medians['stock']:>8.1f} {medians['int4']:>8.1f} {medians['int4_bf16']:>10.1f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
