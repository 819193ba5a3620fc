#!/usr/bin/env bash
# One prepared GPU check (< 8 minutes on one H100): lossless tests on CUDA, profile, bench of the default
# model. Writes every figure under ${OUT:-runs/gpu}. Run through `make gpu-check` on a machine with CUDA
# (install a CUDA torch first: TORCH_SPEC="torch==2.13.0" with the CUDA wheel index).
set -euo pipefail
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
