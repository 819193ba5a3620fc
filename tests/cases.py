"""Decoding test cases shared by the greedy and the sampled lossless tests: tiny models of three architectures with
every kind of heads the runtime runs, and random trees."""

from hypothesis import strategies as st

from conftest import tiny_heads, tiny_model
from medusa_runtime.layout import pack_linears
from medusa_runtime.lookup import ContextLookup
from medusa_runtime.spec import TreeSpec

MODELS = {arch: tiny_model(arch, seed=i) for i, arch in enumerate(["llama", "qwen2", "mistral"])}
MODELS["llama-packed"] = tiny_model("llama", seed=0)  # CPU loading swaps in oneDNN-packed linears (layout.py)
pack_linears(MODELS["llama-packed"])
MODELS["llama-draft-vocab"] = MODELS["llama"]  # heads that guess from a third of the 64 tokens only
MODELS["llama-root"] = MODELS["llama-packed"]  # root-conditioned heads (they also read the root token)
MODELS["llama-sequential"] = MODELS["llama-packed"]  # sequential heads: guesses per path, depth by depth
MODELS["qwen2-sequential-draft"] = MODELS["qwen2"]  # the same, unpacked, from a draft vocabulary
MODELS["mistral-lookup"] = MODELS["mistral"]  # plain heads with context lookup: expanded depth by depth too
MODELS["qwen2-sequential-lookup"] = MODELS["qwen2"]  # sequential heads with context lookup, from a draft vocabulary
MODELS["llama-prefix"] = MODELS["llama-packed"]  # plain heads reading a prefix-attention layer (its own KV cache)
MODELS["mistral-sequential-prefix"] = MODELS["mistral"]  # sequential heads with prefix attention
HEADS = {arch: tiny_heads(model, num_heads=3, root=arch == "llama-root", sequential="sequential" in arch,
                          lookup=ContextLookup(1, 3) if "lookup" in arch else None, prefix="prefix" in arch)
         for arch, model in MODELS.items()}
HEADS["llama-draft-vocab"].set_draft_vocab(list(range(0, 64, 3)))
HEADS["qwen2-sequential-draft"].set_draft_vocab(list(range(1, 64, 2)))
HEADS["qwen2-sequential-lookup"].set_draft_vocab(list(range(1, 64, 2)))  # lookup proposals may lie outside it


@st.composite
def random_trees(draw, max_depth=3, max_rank=4, max_nodes=20):
    paths: list[tuple[int, ...]] = []
    for _ in range(draw(st.integers(0, max_nodes))):
        parent = draw(st.sampled_from([()] + [p for p in paths if len(p) < max_depth]))
        rank = draw(st.integers(0, max_rank - 1))
        if parent + (rank,) not in paths:
            paths.append(parent + (rank,))
    return TreeSpec(paths)
