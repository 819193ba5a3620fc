#!/usr/bin/env bash
# Issue 38's calibrations, one chain per setting (run chains side by side: tokens/step do not depend on timing).
# At a temperature: coupled drafts on the calibration prompts 0:80:2 (head temperature fitted there), mode drafts on
# the same rollouts (--answers keeps them), and the two other pools of the prediction study (1:80:4, 3:80:4) ranked
# with the head temperature fitted on 0:80:2 (never fitted on them). Everything lands in runs/c/.
#   bash experiments/coupled_calibrate.sh 1.0 [--top-p 0.9]      bash experiments/coupled_calibrate.sh 0 (greedy)
# Other heads: HEADS=runs/heads_x C=runs/c_x (their own output folder); MODE=0 skips the mode-draft stats, POOLS=0 the
# two other pools; T and PY name the treeopt command and the Python that runs the scripts.
set -euo pipefail
T=${T:-.venv/bin/treeopt}
PY=${PY:-.venv/bin/python}
C=${C:-runs/c}
heads=(); [ -n "${HEADS:-}" ] && heads=(--heads "$HEADS")
mkdir -p $C
t=$1; shift
tag=t$t$(echo "$*" | tr -d ' -' | sed 's/topp/p/;s/topk/k/')
cal() {  # cal SELECT OUT [options...]
  local sel=$1 out=$2; shift 2
  local n=$(echo $sel | tr ':' '_')
  [ -f "$out" ] || $T calibrate --select $sel --temperature $t "${heads[@]}" "$@" --answers $C/answers_${tag}_$n.jsonl --out "$out" > "$out.log" 2>&1
  grep -a "positions from\|fitted" "$out.log" | sed "s|^|$(basename $out): |"
}
if [ "$t" = 0 ]; then
  cal 0:80:2 $C/t0_0_80_2.json
  exit 0
fi
cal 0:80:2 $C/${tag}_c_0_80_2.json "$@"
[ "${MODE:-1}" = 1 ] && cal 0:80:2 $C/${tag}_m_0_80_2.json "$@" --drafts mode
[ "${POOLS:-1}" = 1 ] || exit 0
tau=$($PY -c "import json,sys; print(','.join(map(str, json.load(open(sys.argv[1]))['provenance']['drafts']['head_temperature'])))" $C/${tag}_c_0_80_2.json)
for sel in 1:80:4 3:80:4; do
  n=$(echo $sel | tr ':' '_')
  cal $sel $C/${tag}_c_$n.json "$@" --head-temperature $tau
done
