#!/usr/bin/env bash
# Issue 32, item 5: each test that was strengthened fails when the behaviour it names is broken. For each fault, a
# copy of the tracked tree gets one edit (sed), the named test runs there, and the line says whether it failed.
# Run from the repository root with the project's .venv; nothing in the checkout is changed.
set -uo pipefail
ROOT=$(pwd)
PY=$ROOT/.venv/bin/python
fault() {  # fault NAME FILE SED-EXPR TEST...
  local name=$1 file=$2 expr=$3; shift 3
  local dir; dir=$(mktemp -d /tmp/fault.XXXXXX)
  git ls-files -z | xargs -0 -I{} cp --parents {} "$dir"
  sed -i "$expr" "$dir/$file"
  if cmp -s "$ROOT/$file" "$dir/$file"; then echo "$name: the edit did not apply (fix the script)"; rm -rf "$dir"; return; fi
  (cd "$dir" && timeout 900 "$PY" -m pytest -q -x -p no:cacheprovider "$@" > "$dir/out.txt" 2>&1)
  local rc=$?
  echo "$name: $( [ $rc -ne 0 ] && echo "FAILS as it should (rc $rc)" || echo "still PASSES: the test is weak" ) -- $(grep -E '^(FAILED|ERROR)' "$dir/out.txt" | head -1 | cut -c1-150)"
  rm -rf "$dir"
}
# the GPU tests: with TREEOPT_TEST_DEVICE=cuda and no CUDA, the run fails; without the check they would all skip
(TREEOPT_TEST_DEVICE=cuda $PY -m pytest -q tests/test_gpu.py > /dev/null 2>&1; echo "gpu tests, TREEOPT_TEST_DEVICE=cuda without CUDA: rc $?")
fault "gpu check removed" tests/conftest.py 's/os.environ.get("TREEOPT_TEST_DEVICE") == "cuda" and/False and/' \
  tests/test_gpu.py -o addopts="" ; echo "   (expected: 'still PASSES' above, i.e. all skipped, which is why the check exists)"
fault "typical: threshold without the entropy term" medusa_runtime/acceptance.py \
  's/torch.minimum(torch.full_like(entropy, s.posterior_threshold), s.posterior_alpha \* torch.exp(-entropy))/torch.full_like(entropy, s.posterior_threshold)/' \
  tests/test_acceptance.py -k typical
fault "typical: first of the longest paths, not the most likely" medusa_runtime/acceptance.py \
  's/best = torch.where(longest, path_logp, float("-inf")).argmax(dim=-1)/best = longest.float().argmax(dim=-1)/' \
  tests/test_acceptance.py -k hand_computed
fault "sample-and-match: the bonus drawn one position off" medusa_runtime/acceptance.py \
  's/\[root_positions\[r\] + depth + 1 for r in walking\]/[root_positions[r] + depth for r in walking]/' \
  tests/test_decoding.py -k "sampled_tree_decoding and llama-packed"
fault "resume: checkpoint ignored" treeopt/train_heads.py 's/    if state_path.exists():/    if False and state_path.exists():/' \
  tests/test_train_heads.py -k resume
fault "heads: ReLU instead of SiLU in the ResBlock" medusa_runtime/heads.py 's/F.silu(/F.relu(/' \
  tests/test_heads.py -k "candidates_are_the_full_topk"
fault "heads: a .pt checkpoint loaded with one tensor changed" medusa_runtime/heads.py \
  's/    heads.load_checkpoint_state(state)  # infer_config/    heads.load_checkpoint_state({k: (v + 1 if k == "1.0.linear.bias" else v) for k, v in state.items()})  # infer_config/' \
  tests/test_heads.py -k pt_checkpoint
fault "build: the second-best candidate first" treeopt/builder.py \
  's/        neg_p, _, path = heapq.heappop(heap)/        neg_p, _, path = heapq.heappop(heap) if len(heap) < 2 or len(paths) != 1 else heapq.nsmallest(2, heap)[1]; heap = [h for h in heap if h[2] != path]; heapq.heapify(heap)/' \
  tests/test_builder.py -k every_prefix
fault "plan: never plain decoding" treeopt/plan.py 's/best = max(rates, key=lambda n: (rates\[n\], -n))/best = max((n for n in rates if n), key=lambda n: (rates[n], -n))/' \
  tests/test_plan.py -k by_hand
fault "plan: the last batch not filled up" treeopt/plan.py 's/rows = \[order\[(start + i) % len(order)\] for i in range(batch)\]/rows = order[start : start + batch]/' \
  tests/test_plan.py -k filled_up
fault "decoder: finished rows stay in the batch" medusa_runtime/decoding.py \
  's/        if keep == list(range(len(self.rows))):/        if True:/' \
  tests/test_decoding.py -k finished_rows
