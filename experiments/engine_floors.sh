#!/usr/bin/env bash
# Issue 32's engine measurements: plain heads for SmolLM2 (from git history, below), calibrated as TensorRT-LLM runs
# them, built for it, exported without a warning, and benched as it runs them; with SPLIT=1 also the prediction over
# 1,000 splits (stats only: run it beside other work). Everything lands in runs/e/.
set -uo pipefail
T=${T:-.venv/bin/treeopt}
E=runs/e
mkdir -p $E
source "$(dirname "$0")/plain_heads.sh"  # runs/plain_heads/: the last plain heads shipped (commit 06289b2)
for sel in 0:80:2 1:80:4 3:80:4; do
  n=$(echo $sel | tr ':' '_')
  [ -f $E/trt_$n.json ] || $T calibrate --engine trtllm --heads runs/plain_heads --select $sel --out $E/trt_$n.json > $E/cal_$n.log 2>&1
done
for nodes in 6 64; do
  $T build $E/trt_0_80_2.json --budget $((nodes - 1)) --for trtllm --out $E/tree$nodes.json 2>&1 | tee $E/build$nodes.log
  $T export $E/tree$nodes.json --format trtllm-llmapi --out $E/tree$nodes.yaml 2>&1 | tee $E/export$nodes.log
  [ -f $E/bench$nodes.json ] || $T bench --engine trtllm --heads runs/plain_heads --tree $E/tree$nodes.json --select 1:80:4 \
    --json $E/bench$nodes.json > $E/bench$nodes.log 2>&1
  grep -a "^tokens/step\|^speedup\|warning" $E/bench$nodes.log
done
# the demo's tree (sequential heads with context lookup and a draft vocabulary) exported for TensorRT-LLM: a warning
$T export runs/s/tree_t0_6.json --format trtllm-llmapi 2>&1 >/dev/null | tee $E/export_demo_tree.log
# the shipped heads cannot be calibrated as TensorRT-LLM runs them: one line, exit 2, nothing written
$T calibrate --engine trtllm --select 0:2 --out $E/refused.json > $E/refused.log 2>&1; echo "exit $? ; written: $(ls $E/refused.json 2>/dev/null || echo nothing)" | tee -a $E/refused.log
[ "${SPLIT:-0}" = 0 ] || [ -f $E/split.json ] || .venv/bin/python scripts/split_study.py $E/trt_0_80_2.json $E/trt_1_80_4.json $E/trt_3_80_4.json \
  --budgets 5,63 --splits 1000 --out $E/split.json | sed -n 1,4p
