#!/usr/bin/env bash
# The last plain (upstream-format) heads this repository shipped, 3 ResBlocks trained on 280k tokens (commit
# 06289b2), into runs/plain_heads/ (once): what the engine probes run, since engines run plain heads only and a fresh
# 'treeopt train-heads --kind plain' spends an hour on a 2-core VM in features alone. Sourced by engine_floors.sh and
# vllm_floors.sh.
if [ ! -f runs/plain_heads/medusa_lm_head.safetensors ]; then
  mkdir -p runs/plain_heads
  for f in config.json medusa_lm_head.safetensors draft_vocab.json README.md; do
    git show 06289b2:data/heads/smollm2-135m/$f > runs/plain_heads/$f
  done
fi
