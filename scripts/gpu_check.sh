#!/usr/bin/env bash
# One prepared GPU check (< 10 minutes on one H100, then the demos at the end when PREV_HEADS is set): lossless tests on CUDA, profile, bench of the default
# model. Writes every figure under ${OUT:-runs/gpu}. Run through `make gpu-check` on a machine with CUDA
# (install a CUDA torch first: TORCH_SPEC="torch==2.13.0" with the CUDA wheel index).
set -euo pipefail
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'
  echo "Environment: OUT (default runs/gpu), BIN (default .venv/bin), PREV_HEADS (previous heads' folder), DEMO_RUNS (default 1)."
  exit 0
fi
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
BIN=${BIN:-.venv/bin}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
TREEOPT_TEST_DEVICE=cuda "$BIN/python" -m pytest -q tests/test_gpu.py 2>&1 | tail -n 5 | tee "$OUT/tests.txt"
"$BIN/treeopt" profile --device cuda --dtype bfloat16 --repeats 30 --batch-sizes 1,4,16,64 --out "$OUT/latency_bfloat16.json"
"$BIN/treeopt" profile --device cuda --dtype float16 --repeats 30 --out "$OUT/latency_float16.json"
"$BIN/treeopt" calibrate --device cuda --dtype bfloat16 --select 0:80:2 --out "$OUT/stats.json"
"$BIN/treeopt" plan "$OUT/stats.json" --latency "$OUT/latency_bfloat16.json" --out "$OUT/plan.json" --png "$OUT/plan.png"
"$BIN/treeopt" build "$OUT/stats.json" --budget auto --latency "$OUT/latency_bfloat16.json" --out "$OUT/tree.json" --png "$OUT/curve.png"
"$BIN/treeopt" bench --device cuda --dtype bfloat16 --tree "$OUT/tree.json" --select 1:80:4 --json "$OUT/bench_bf16.json"
"$BIN/treeopt" bench --device cuda --dtype bfloat16 --oracle --tree "$OUT/tree.json" --select 1:80:8 --json "$OUT/bench_oracle_bf16.json"
# sampling: sample-and-match against keyed plain sampling, token for token (the greedy tree: bench warns, the identity holds)
"$BIN/treeopt" bench --device cuda --dtype bfloat16 --tree "$OUT/tree.json" --select 1:80:4 --temperature 0.7 --json "$OUT/bench_bf16_t0.7.json"
# in-flight batching: 40 requests with mixed token limits through B slots, against static batches and HF (issue 33)
for b in 1 8 32; do
  "$BIN/treeopt" bench --device cuda --dtype bfloat16 --batching continuous --batch-size "$b" --tree "$OUT/tree.json" \
    --select 1:80:2 --min-new-tokens 32 --json "$OUT/serve_b$b.json"
done
# Issue 16's demo floor on this GPU, in fp32 as the issue states it: `treeopt demo` with the shipped heads and, when
# PREV_HEADS names a folder with the previous heads (the files of commit 066cafc, see README), with those, runs
# alternating (DEMO_RUNS each, default 1), then the ratio of the median speedups. Through the device tool: make the
# folder with `git show` into runs/prev_heads (ignored), name it in `carry`, and run `PREV_HEADS=runs/prev_heads make gpu-check`.
if [ -n "${PREV_HEADS:-}" ]; then
  for i in $(seq 1 "${DEMO_RUNS:-1}"); do
    "$BIN/treeopt" demo --device cuda --dtype float32 --heads "$PREV_HEADS" --out "$OUT/demo_prev_$i" > "$OUT/demo_prev_$i.log" 2>&1
    "$BIN/treeopt" demo --device cuda --dtype float32 --out "$OUT/demo_new_$i" > "$OUT/demo_new_$i.log" 2>&1
  done
  "$BIN/python" - "$OUT" <<'PY' | tee "$OUT/demo_ratio.json"
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
runs = {kind: [json.loads(p.read_text()) for p in sorted(out.glob(f"demo_{kind}_*/report.json"))] for kind in ("prev", "new")}
median = {kind: statistics.median(r["speedup"] for r in reports) for kind, reports in runs.items()}
print(json.dumps({"speedups": {k: [round(r["speedup"], 3) for r in v] for k, v in runs.items()},
                  "nodes": {k: [r["nodes"] for r in v] for k, v in runs.items()},
                  "identical": {k: [r["identical"] for r in v] for k, v in runs.items()},
                  "ratio_of_medians": round(median["new"] / median["prev"], 3)}))
PY
fi
