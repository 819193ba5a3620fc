#!/usr/bin/env bash
# Issue 38 item 4 (heads for sampling): one heads folder measured as the shipped heads were in results.md "Coupled
# drafts": coupled stats at 0.7 and 1.0 (head temperature fitted on 0:80:2) and greedy stats, trees of 6 and 64 nodes,
# each decoded on 1:80:4 at batch 1 against its keyed plain-sampling (or greedy) reference. Tokens/step and identity
# only (timing-free: runs beside other work).
#   HEADS=runs/heads_dist C=runs/c_dist bash experiments/heads_sampling.sh [0.7 0 1.0]
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # the scripts run from experiments/ import this checkout, not PY's own
export HEADS=${HEADS:?name the heads folder} C=${C:?name an output folder} MODE=0 POOLS=0 NODES="6 64" BATCHES=1
export T=${T:-.venv/bin/treeopt} PY=${PY:-.venv/bin/python}
for t in ${*:-0.7 0 1.0}; do
  echo "== temperature $t ($(date -u +%H:%M:%S))"
  bash experiments/coupled_calibrate.sh $t
  bash experiments/coupled_floors.sh t$t
done
echo "== done ($(date -u +%H:%M:%S))"
