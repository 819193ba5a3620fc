#!/usr/bin/env bash
# Issue 38's tokens/step and identity floors (timing-free: keyed draws fix the text), on the stats of
# experiments/coupled_calibrate.sh: trees of 6, 16 and 64 nodes built from coupled (and mode) stats, decoded on
# MT-Bench 1:80:4 at batch 1 and 4 against each prompt's keyed plain-sampling reference. Phase names: t1.0 t0.7 t0.3
# t1.0p0.9 t0 (greedy). Outputs in runs/c/floors_*.{log,json}.
# Other heads: HEADS=runs/heads_x C=runs/c_x (the folder coupled_calibrate.sh wrote with the same HEADS); NODES="6 64"
# and BATCHES=1 narrow the run; T and PY name the treeopt command and the Python that runs the scripts.
set -euo pipefail
T=${T:-.venv/bin/treeopt}
PY=${PY:-.venv/bin/python}
C=${C:-runs/c}
B=${BATCHES:-1,4}
heads=(); [ -n "${HEADS:-}" ] && heads=(--heads "$HEADS")
tag=$1
build() {  # build STATS NODES OUT
  [ -f "$3" ] || $T build "$1" --budget $(( $2 - 1 )) --out "$3" > "$3.log" 2>&1
  grep -o "predicted [0-9.]* tokens/step" "$3.log" | sed "s|^|$(basename $3): |"
}
if [ "$tag" = t0 ]; then
  for n in 6 64; do build $C/t0_0_80_2.json $n $C/tree_t0_$n.json; done
  $PY experiments/coupled_identity.py $C/t0_0_80_2.json --trees $C/tree_t0_6.json,$C/tree_t0_64.json "${heads[@]}" \
    --batch-sizes 1 --json $C/floors_t0.json | tee $C/floors_t0.log
  exit 0
fi
nodes="6 64"; [ "$tag" = t1.0 ] && nodes="6 16 64"; nodes=${NODES:-$nodes}
trees=""; mode=""
for n in $nodes; do
  build $C/${tag}_c_0_80_2.json $n $C/tree_${tag}_c_$n.json; trees="$trees,$C/tree_${tag}_c_$n.json"
  if [ $n != 6 ] && [ -f $C/${tag}_m_0_80_2.json ]; then
    build $C/${tag}_m_0_80_2.json $n $C/tree_${tag}_m_$n.json; mode="$mode,$C/tree_${tag}_m_$n.json"
  fi
done
[ -f $C/${tag}_m_0_80_2.json ] && build $C/${tag}_m_0_80_2.json 6 $C/tree_${tag}_m_6.json
$PY experiments/coupled_identity.py $C/${tag}_c_0_80_2.json --trees ${trees#,} --mode-trees "${mode#,}" "${heads[@]}" \
  --batch-sizes $B --json $C/floors_$tag.json | tee $C/floors_$tag.log
