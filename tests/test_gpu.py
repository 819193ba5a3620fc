"""Lossless decoding on CUDA (run by scripts/gpu_check.sh; skipped without a GPU, unless TREEOPT_TEST_DEVICE=cuda
asks for one: then a CPU-only torch fails the run at once, conftest.py)."""

import pytest
import torch

from conftest import tiny_heads, tiny_model
from conftest import hf_greedy
from medusa_runtime.hf_decode import hf_reference
from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.sampling import SamplingConfig
from medusa_runtime.spec import TreeSpec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh runs it)")


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["plain", "root-conditioned", "sequential"])
def test_tree_decoding_equals_hf_greedy_on_cuda(arch, dtype, kind):
    model = tiny_model(arch).to("cuda", dtype)
    heads = tiny_heads(model, num_heads=3, root=kind == "root-conditioned", sequential=kind == "sequential").to("cuda", dtype)
    heads.attach_base(model)
    tree = TreeSpec([(0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0), (2,)])
    for prompt in ([5, 6, 7], [9, 20, 31, 40]):
        reference = hf_greedy(model, prompt, 24, [])
        assert MedusaDecoder(model, heads, tree, []).generate(prompt, 24).tokens == reference
        assert MedusaDecoder(model, None, tree, []).generate(prompt, 24, oracle=reference).tokens == reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sequential", [False, True])
def test_batched_decoding_equals_each_prompts_greedy_on_cuda(dtype, sequential):
    model = tiny_model("llama").to("cuda", dtype)
    heads = tiny_heads(model, num_heads=3, root=True, sequential=sequential).to("cuda", dtype)
    heads.attach_base(model)
    tree = TreeSpec([(0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0), (2,)])
    prompts = [[5, 6, 7], [9, 20, 31, 40, 41, 42], [11]]
    results = MedusaDecoder(model, heads, tree, []).generate_batch(prompts, 24)
    assert [r.tokens for r in results] == [hf_greedy(model, p, 24, []) for p in prompts]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sampling", [SamplingConfig(temperature=0.7, seed=1), SamplingConfig(temperature=1.0, top_k=20, top_p=0.9, seed=2)])
def test_sampled_decoding_equals_keyed_plain_sampling_on_cuda(dtype, sampling):
    model = tiny_model("llama").to("cuda", dtype)
    heads = tiny_heads(model, num_heads=3, sequential=True).to("cuda", dtype)
    heads.attach_base(model)
    tree = TreeSpec([(0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0), (2,)])
    prompts = [[5, 6, 7], [9, 20, 31, 40, 41, 42], [11]]
    results = MedusaDecoder(model, heads, tree, [], sampling).generate_batch(prompts, 24)
    assert [r.tokens for r in results] == [hf_reference(model, p, 24, [], sampling) for p in prompts]
