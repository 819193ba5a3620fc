#!/usr/bin/env bash
# Issue 38's speed table, on a quiet machine (nothing else running: timing): bench of the 6-node trees of
# experiments/coupled_floors.sh on MT-Bench 1:80:4, greedy, then at temperature 0.7 and 1.0 with mode and coupled
# drafts (each tree drafts as its stats were ranked), back to back; the paired coupled-vs-mode difference per prompt;
# the cost of the coupled drafts' noise per step (NOISE=0 skips it). Outputs in $C/speed_* (C=runs/c unless set).
set -euo pipefail
T=${T:-.venv/bin/treeopt}
C=${C:-runs/c}
bench() {  # bench NAME TREE [options...]
  local name=$1 tree=$2; shift 2
  [ -f "$C/speed_$name.json" ] || $T bench --tree "$tree" --select 1:80:4 --json "$C/speed_$name.json" "$@" > "$C/speed_$name.log" 2>&1
  grep -a "^sampling\|^tokens/step\|^baseline\|^speedup\|warning" "$C/speed_$name.log" | sed "s/^/$name: /"
}
lscpu | grep "Model name"
bench t0_6 $C/tree_t0_6.json
for t in 0.7 1.0; do
  bench t${t}_m6 $C/tree_t${t}_m_6.json --temperature $t
  bench t${t}_c6 $C/tree_t${t}_c_6.json --temperature $t
  .venv/bin/python experiments/paired_trees.py $C/speed_t${t}_c6.json $C/speed_t${t}_m6.json | sed -n 1p | sed "s/^/t$t coupled vs mode: /"
done
[ "${NOISE:-1}" = 1 ] || exit 0
.venv/bin/python experiments/draft_noise_cost.py $C/tree_t1.0_c_6.json --temperature 1.0 --head-temperature 1.2 --select 1:80:16 2>&1 \
  | grep -v Loading | tee $C/noise_cost.log
