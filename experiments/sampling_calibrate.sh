set -x
T=.venv/bin/treeopt
for t in 0.7 1.0; do
  for sel in 0:80:2 1:80:4 3:80:4; do
    n=$(echo $sel | tr ':' '_')
    $T calibrate --temperature $t --out runs/s/t${t}_${n}.json --select $sel
  done
done
$T calibrate --temperature 0.3 --out runs/s/t0.3_0_80_2.json --select 0:80:2
$T calibrate --temperature 1.0 --top-p 0.9 --out runs/s/t1.0p0.9_0_80_2.json --select 0:80:2
$T calibrate --temperature 1.0 --top-k 20 --out runs/s/t1.0k20_0_80_2.json --select 0:80:2
for sel in 1:80:4 3:80:4; do n=$(echo $sel | tr ':' '_'); $T calibrate --out runs/s/t0_${n}.json --select $sel; done
