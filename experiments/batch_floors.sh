#!/usr/bin/env bash
# Issue 33's measurements: the plan per batch size (static and continuous batching) against what the runtime
# measures, the planned tree against its neighbouring budgets and plain decoding, in-flight against static batches,
# and a queue of mixed prompt lengths. Greedy stats of runs/s (sampling_floors.sh phase 1: calibrate --select 0:80:2);
# everything lands in runs/b/ (B=DIR for another folder). One benchmark at a time: ~45 min on the 2-core VM.
# SERVE_ONLY=1: the profile, the continuous plan and the in-flight benches alone (~20 min; README's batching rows).
set -uo pipefail
T=${T:-.venv/bin/treeopt}
PY=${PY:-.venv/bin/python}
B=${B:-runs/b}
S=${STATS:-runs/s/t0_cal.json}
mkdir -p $B
[ -f $S ] || $T calibrate --select 0:80:2 --out $S
[ -f $B/latency.json ] || $T profile --out $B/latency.json --sizes 1,2,3,4,5,6,8,12,16,24,32,48,64 --batch-sizes 1,2,4,8 > $B/profile.log 2>&1
$T plan $S --latency $B/latency.json --batching continuous --out $B/plan_cont.json | tee $B/plan_cont.log
if [ "${SERVE_ONLY:-0}" != 1 ]; then
$T plan $S --latency $B/latency.json --out $B/plan_static.json | tee $B/plan_static.log
# every budget the plan chose, its neighbours and plain decoding, measured side by side and checked against HF
$T sweep $S --latency $B/latency.json --budgets 0 --batch-sizes 1,2,4,8 --json $B/sweep_static.json > $B/sweep_static.log 2>&1
$T sweep $S --latency $B/latency.json --budgets 0 --batch-sizes 2,4,8 --batching continuous --rounds 2 --json $B/sweep_cont.json > $B/sweep_cont.log 2>&1
$T plan $S --latency $B/latency.json --png $B/plan_static.png --measured $B/sweep_static.json > /dev/null
$T plan $S --latency $B/latency.json --batching continuous --png $B/plan_cont.png --measured $B/sweep_cont.json > /dev/null
fi
# in-flight against static batches, requests with limits drawn from 32-128, the continuous plan's tree
for b in 4 8; do
  $T build $S --budget auto --latency $B/latency.json --batch-size $b --batching continuous --out $B/tree_c$b.json > $B/build_c$b.log 2>&1
  $T bench --batching continuous --batch-size $b --tree $B/tree_c$b.json --select 1:80:4 --min-new-tokens 32 --json $B/serve_b$b.json > $B/serve_b$b.log 2>&1
done
grep -a -A5 "^ *arm " $B/serve_b*.log
[ "${SERVE_ONLY:-0}" = 1 ] && exit 0
$PY experiments/mixed_lengths.py --tree $B/tree_c4.json --batch-size 4 > $B/mixed.log 2>&1
grep -a "^planned tree vs\|identical" $B/sweep_*.log | tail -20
