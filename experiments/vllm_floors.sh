#!/usr/bin/env bash
# Issue 39's vLLM measurements: the last plain heads this repository shipped (from git history, as engine_floors.sh
# takes them), calibrated as vLLM runs them (plain, their 4,096-token draft vocabulary as vLLM's token_map, no
# lookup), the chain's depth chosen by 'build --for vllm --budget auto' from a quick latency profile (only to choose
# the depth: this is no speed measurement), exported for vLLM, and benched as vLLM runs the heads on the held-out
# prompts; the shipped (sequential) heads refused. Everything lands in runs/v/.
set -uo pipefail
T=${T:-.venv/bin/treeopt}
V=runs/v
mkdir -p $V
source "$(dirname "$0")/plain_heads.sh"  # runs/plain_heads/: the last plain heads shipped (commit 06289b2)
[ -f $V/vllm_0_80_2.json ] || $T calibrate --engine vllm --heads runs/plain_heads --select 0:80:2 --out $V/vllm_0_80_2.json > $V/cal_0_80_2.log 2>&1
tail -2 $V/cal_0_80_2.log
[ -f $V/latency.json ] || $T profile --heads runs/plain_heads --sizes 1,2,3,4,5 --passes 1 --out $V/latency.json > $V/profile.log 2>&1
$T build $V/vllm_0_80_2.json --for vllm --budget auto --latency $V/latency.json --out $V/chain.json 2>&1 | tee $V/build.log
rm -rf $V/vllm_heads
$T export-heads runs/plain_heads --format vllm --out $V/vllm_heads 2>&1 | tee $V/export_heads.log
$T export $V/chain.json --format vllm --heads-dir $V/vllm_heads --out $V/speculative_config.json 2>&1 | tee $V/export.log
cat $V/speculative_config.json
[ -f $V/bench.json ] || $T bench --engine vllm --heads runs/plain_heads --tree $V/chain.json --select 1:80:4 \
  --json $V/bench.json > $V/bench.log 2>&1
grep -a "^tokens/step\|identical\|warning" $V/bench.log
# the re-implemented vLLM loader (tests/test_consumers.py) reads what export-heads and export wrote
.venv/bin/python - <<'PY' 2>&1 | tee $V/loader.log
import json, sys, torch
sys.path.insert(0, "tests")
from pathlib import Path
from test_consumers import vllm_load, vllm_speculative_config
from medusa_runtime.heads import load_heads
from medusa_runtime.models import load_model

config = vllm_speculative_config(Path("runs/v/speculative_config.json").read_text())
loaded = vllm_load(Path(config["model"]), config["num_speculative_tokens"])
model = load_model("smollm2-135m", device="cpu", dtype="float32").model
heads = load_heads("runs/plain_heads", model).engine_view("vllm")
h = torch.randn(256, model.config.hidden_size)
same = torch.equal(loaded.propose(h), heads.candidates(h, 1)[..., 0][:, : config["num_speculative_tokens"]])
print(f"vLLM loader: {config['num_speculative_tokens']} heads, token_map of {len(loaded.token_map)}; proposals equal the engine view's top-1: {same}")
PY
# the shipped heads (sequential, context lookup): refused in one line, exit 2, nothing written
rm -rf $V/refused
$T export-heads data/heads/smollm2-135m --format vllm --out $V/refused > $V/refused.log 2>&1; echo "exit $? ; written: $(ls $V/refused 2>/dev/null || echo nothing)" | tee -a $V/refused.log
cat $V/refused.log
