#!/usr/bin/env bash
# Issue 31's measurements (sampled decoding), in the order they were run. Phase 1 checks identity and tokens/step
# (machine noise cannot change either: keyed draws fix the text); phase 2 is the speed table, run on a quiet machine;
# phase 3 the prediction study. Everything lands in runs/s/. Needs the stats of experiments/sampling_calibrate.sh.
set -euo pipefail
T=${T:-.venv/bin/treeopt}
S=runs/s
phase=${1:-all}
build() {  # build STATS NODES OUT
  [ -f "$3" ] || $T build "$1" --budget $(( $2 - 1 )) --out "$3" > /dev/null
}
bench() {  # bench NAME TREE [options...]
  local name=$1 tree=$2; shift 2
  [ -f "$S/bench_$name.json" ] || $T bench --tree "$tree" --select 1:80:4 --json "$S/bench_$name.json" "$@" > "$S/bench_$name.log" 2>&1
  grep -a "^tokens/step\|^speedup\|warning" "$S/bench_$name.log" | sed "s/^/$name: /"
}
for stats in t0 t0.3 t0.7 t1.0 t1.0p0.9 t1.0k20; do
  src=$S/${stats}_0_80_2.json; [ "$stats" = t0 ] && src=$S/t0_cal.json
  for n in 6 16 64; do build "$src" $n "$S/tree_${stats}_$n.json"; done
done
if [ "$phase" = all ] || [ "$phase" = 1 ]; then
  for b in 1 4; do
    bench t0_6_b$b $S/tree_t0_6.json --batch-size $b
    bench t0_64_b$b $S/tree_t0_64.json --batch-size $b
    for t in 0.3 0.7 1.0; do
      bench t${t}_6_b$b $S/tree_t${t}_6.json --temperature $t --batch-size $b
      bench t${t}_64_b$b $S/tree_t${t}_64.json --temperature $t --batch-size $b
    done
  done
  bench t1.0p0.9_6_b1 $S/tree_t1.0p0.9_6.json --temperature 1.0 --top-p 0.9
  bench t1.0p0.9_64_b4 $S/tree_t1.0p0.9_64.json --temperature 1.0 --top-p 0.9 --batch-size 4
  bench t1.0k20_6_b4 $S/tree_t1.0k20_6.json --temperature 1.0 --top-k 20 --batch-size 4
  bench t1.0k20_64_b1 $S/tree_t1.0k20_64.json --temperature 1.0 --top-k 20
  # calibration for the temperature pays: trees from greedy stats decoding at temperature 1.0 (the same text)
  bench t1.0_16_b1 $S/tree_t1.0_16.json --temperature 1.0
  for n in 6 16 64; do bench t1.0_from_t0_${n}_b1 $S/tree_t0_$n.json --temperature 1.0; done
  for n in 6 16 64; do .venv/bin/python experiments/paired_trees.py $S/bench_t1.0_${n}_b1.json $S/bench_t1.0_from_t0_${n}_b1.json | sed -n 1p; done
fi
if [ "$phase" = all ] || [ "$phase" = 2 ]; then  # quiet machine: speed over HF sampling, sample-and-match vs typical
  bench speed_t0_6 $S/tree_t0_6.json
  for t in 0.7 1.0; do
    bench speed_t${t}_6_sample $S/tree_t${t}_6.json --temperature $t
    bench speed_t${t}_6_typical $S/tree_t${t}_6.json --temperature $t --acceptance typical
  done
fi
if [ "$phase" = all ] || [ "$phase" = 3 ]; then  # predictions over 1,000 random splits of all 80 MT-Bench questions
  for t in 0.7 1.0; do
    [ -f $S/split_t$t.json ] || .venv/bin/python scripts/split_study.py $S/t${t}_0_80_2.json $S/t${t}_1_80_4.json $S/t${t}_3_80_4.json \
      --budgets 5,63 --splits 1000 --out $S/split_t$t.json | sed -n 1,4p
  done
fi
