"""Each export format, fed through a re-implementation of what its consumer does with it.

For every consumer the test parses the exported text the way the consumer does, lays the tree out the way
the consumer does, reads the tree back from that layout (each node: its head, its rank, its parent), and
checks it is exactly the tree treeopt evaluated, node for node. The re-implementations are written from
reading the consumers' source (files and commits named in each docstring); they copy no code. They also
show why ``treeopt export`` refuses what it refuses: past a limit, the consumer runs another tree.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import List, Literal, Optional

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from medusa_runtime.spec import TreeSpec, TreeSpecError
from treeopt.formats import BUILD_TARGETS, EXPORT_FORMATS, FORMATS, TRTLLM_DEFAULT_MAX_DRAFT_LEN, export_tree

Path_ = tuple[int, ...]

MEDUSA_SOURCE = "FasterDecoding/Medusa e2a5d20 (2024-04-18)"
TRTLLM_SOURCE = "NVIDIA/TensorRT-LLM"

FIXED_TREES = [
    TreeSpec([(0,)]),
    TreeSpec([(0,), (0, 0), (0, 0, 0), (0, 0, 0, 0)]),  # chain4
    TreeSpec([(0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0)]),
    TreeSpec([(0,), (1,), (2,), (0, 3), (0, 0), (2, 9), (2, 9, 9)]),  # deeper sibling gaps, rank 9
    TreeSpec([(i,) for i in range(10)] + [(0, i) for i in range(10)]),  # every rank upstream allows
] + [TreeSpec(paths) for key, paths in json.loads((Path(__file__).parent / "data" / "demo_trees.json").read_text()).items()
     if key.startswith("tree")]  # the 6- and 64-node trees built from the demo's calibration


# --------------------------------------------------------------------------- random valid trees
def _relabel_first_level(paths: list[Path_]) -> list[Path_]:
    """Renumber the first-level ranks 0..k-1 (keeping their order), subtrees and all."""
    new_rank = {r: i for i, r in enumerate(sorted({p[0] for p in paths}))}
    return [(new_rank[p[0]],) + p[1:] for p in paths]


@st.composite
def trees(draw, max_rank: int, max_depth: int = 5, max_paths: int = 40, first_level_gap_free: bool = False):
    """A prefix-closed tree in insertion order: each step hangs a child of some rank under an existing node."""
    steps = draw(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, max_rank - 1)), min_size=1, max_size=max_paths))
    paths: list[Path_] = []
    for pick, rank in steps:
        parents = [()] + [p for p in paths if len(p) < max_depth]
        child = parents[pick % len(parents)] + (rank,)
        if child not in paths:
            paths.append(child)
    return TreeSpec(_relabel_first_level(paths) if first_level_gap_free else paths)


@dataclass(frozen=True)
class Node:
    """One node as a consumer lays it out: which head's candidate it holds, of which rank, under which node."""

    head: int  # 1 = the first Medusa head (depth 1)
    rank: int
    parent: int  # the consumer's index of the parent node (0 = root)


def rank_paths(nodes: dict[int, Node]) -> dict[Path_, int]:
    """Rank path from the root -> how many nodes of the consumer's layout hold it (a correct layout: 1 each)."""
    counts: dict[Path_, int] = {}
    for index in nodes:
        path: list[int] = []
        while index != 0:
            path.append(nodes[index].rank)
            index = nodes[index].parent
        counts[tuple(reversed(path))] = counts.get(tuple(reversed(path)), 0) + 1
    return counts


def assert_same_tree(nodes: dict[int, Node], spec: TreeSpec) -> None:
    """The consumer's nodes are exactly the spec's paths, once each, each reading the head of its depth."""
    assert rank_paths(nodes) == {p: 1 for p in spec.paths}
    for node in nodes.values():
        depth = 1 + (0 if node.parent == 0 else nodes[node.parent].head)
        assert node.head == depth, "a node reads another head's candidate"


def runs_same_tree(nodes: dict[int, Node], spec: TreeSpec) -> bool:
    try:
        assert_same_tree(nodes, spec)
    except AssertionError:
        return False
    return True


# --------------------------------------------------------------------------- upstream Medusa
UPSTREAM_TOPK = 10


def upstream_load_module(text: str, name: str) -> list:
    """What ``from .medusa_choices import *`` gives for a file holding ``text``: run it, take ``name``.

    The text is treeopt's own output, run with no builtins."""
    namespace: dict = {"__builtins__": {}}
    exec(compile(text, "medusa_choices.py", "exec"), namespace)
    return namespace[name]


def upstream_layout(choices: list, num_heads: int) -> dict[int, Node]:
    """upstream Medusa's generate_medusa_buffers, read back as nodes.

    Sorts by (length, path); node k+1 is the k-th sorted path; its candidate index is
    rank + TOPK * (depth - 1) + 1 in [root; head-1 top-10; head-2 top-10; ...]; its ancestors are found with
    ``sorted.index(prefix)`` (a missing prefix raises ValueError); the retrieve step takes ``max()`` over the
    leaf chains (an empty list raises ValueError).
    """
    ordered = sorted(choices, key=lambda c: (len(c), c))
    candidates = 1 + UPSTREAM_TOPK * num_heads
    nodes: dict[int, Node] = {}
    for k, choice in enumerate(ordered):
        slot = choice[-1] + UPSTREAM_TOPK * (len(choice) - 1) + 1
        if slot >= candidates:
            raise IndexError(f"candidate {slot} of {candidates}")
        parent = ordered.index(choice[:-1]) + 1 if len(choice) > 1 else 0
        nodes[k + 1] = Node(head=(slot - 1) // UPSTREAM_TOPK + 1, rank=(slot - 1) % UPSTREAM_TOPK, parent=parent)
    leaf_chains = upstream_retrieve_chains(ordered)
    max(len(chain) for chain in leaf_chains)  # upstream pads the chains to this length
    return nodes


def upstream_retrieve_chains(ordered: list) -> list[list[int]]:
    """The retrieve rows: from the last sorted path back, the node chain of each path not already covered."""
    covered: list = []
    chains = []
    for choice in reversed(ordered):
        if choice in covered:
            continue
        chains.append([ordered.index(choice[: j + 1]) + 1 for j in range(len(choice))])
        covered += [choice[: j + 1] for j in range(len(choice))]
    return chains


@pytest.mark.parametrize("spec", FIXED_TREES)
def test_upstream_medusa_fixed_trees(spec):
    """medusa_choices.py (``medusa``) and ``--medusa-choices`` (``medusa-list``, which upstream ``eval``s) into
    generate_medusa_buffers: FasterDecoding/Medusa medusa/model/utils.py at e2a5d20 (file commit 2b89814);
    llm_judge/gen_model_answer_*.py for the eval."""
    check_upstream(spec)


@settings(max_examples=60, deadline=None)
@given(trees(max_rank=10))
def test_upstream_medusa_random_trees(spec):
    """As above, on random trees with ranks < 10 (FasterDecoding/Medusa e2a5d20, medusa/model/utils.py)."""
    check_upstream(spec)


def check_upstream(spec: TreeSpec) -> None:
    heads = spec.depth
    module = export_tree(spec, "medusa", num_heads=heads, name="my_tree")
    listed = eval(export_tree(spec, "medusa-list", num_heads=heads), {"__builtins__": {}})  # noqa: S307 (as upstream does)
    assert upstream_load_module(module, "my_tree") == listed
    nodes = upstream_layout(listed, heads)
    assert_same_tree(nodes, spec)
    leaves = {p for p in spec.paths if not any(q[:-1] == p for q in spec.paths)}
    chains = upstream_retrieve_chains(sorted(listed, key=lambda c: (len(c), c)))
    assert len(chains) == len(leaves)  # one row per leaf: every node can be accepted


def test_upstream_medusa_limits_are_real():
    """Why ``medusa`` refuses rank >= 10, depth > heads and the empty tree (FasterDecoding/Medusa e2a5d20,
    medusa/model/utils.py): rank 10 reads head 2's best candidate instead; a deeper path indexes past the
    candidates; an empty list fails in ``max()``."""
    wide = TreeSpec([(0,), (10,)])
    assert not runs_same_tree(upstream_layout([[0], [10]], num_heads=2), wide)
    with pytest.raises(TreeSpecError, match=r"rank 10.*ranks < 10.*TOPK = 10.*--for medusa"):
        export_tree(wide, "medusa")
    with pytest.raises(IndexError):
        upstream_layout([[0], [0, 0]], num_heads=1)
    with pytest.raises(ValueError):
        upstream_layout([], num_heads=1)


# --------------------------------------------------------------------------- TensorRT-LLM, C++ runtime
PREFIX_BITS = 4  # speculativeChoicesUtils.h PREFIX_CHUNK_SIZE_BITS
PREFIX_MAX_VALUE = 16


def trt_prefix(choice: list[int], length: int) -> int:
    """computePrefix: the first ``length`` ranks packed in a uint64, 4 bits each, first rank highest.

    It refuses more than 16 ranks and a rank above 16; rank 16 passes its check but spills into the slot
    of the rank before."""
    if length * PREFIX_BITS > 64:
        raise ValueError("choices deeper than the prefix can hold")
    prefix = 0
    for i, rank in enumerate(choice[:length]):
        if rank > PREFIX_MAX_VALUE:
            raise ValueError("node degree larger than the prefix can hold")
        prefix |= rank << PREFIX_BITS * (length - 1 - i)
    return prefix


def trt_cpp_layout(choices: list[list[int]], max_draft_len: int, num_heads: int) -> dict[int, Node]:
    """initTensorsFromChoices (cpp/tensorrt_llm/runtime/utils/speculativeChoicesUtils.cpp), read back as nodes.

    Sorts by (depth, packed prefix); refuses more choices than max_draft_len, a skipped depth, and a depth
    above the heads; node ci+1 gets tree id (sum of the previous depths' top-k) + its last rank, where a
    depth's top-k is its largest rank + 1; its parent is looked up by packed prefix among the previous
    depth's nodes, and a prefix not found maps to the root (the map's default). Each node's head and rank are
    then read from its tree id, as the engine reads the candidate it holds.
    """
    order = sorted(range(len(choices)), key=lambda i: (len(choices[i]), trt_prefix(choices[i], len(choices[i]))))
    if len(choices) > max_draft_len:
        raise ValueError("more choices than max_draft_len")
    parents: dict[int, int] = {}
    tree_ids: dict[int, int] = {}
    top_ks: list[int] = []
    depth, level_start, level_top_k, previous, current = 1, 0, 0, {0: 0}, {}
    for ci, index in enumerate(order):
        choice = choices[index]
        if len(choice) != depth:
            if len(choice) != depth + 1 or len(choice) > num_heads:
                raise ValueError("choices skip a depth or need more heads than the engine has")
            top_ks.append(level_top_k)
            level_start, level_top_k = level_start + level_top_k, 0
            depth, previous, current = depth + 1, current, {}
        current[trt_prefix(choice, len(choice))] = ci + 1
        parents[ci + 1] = previous.get(trt_prefix(choice, len(choice) - 1), 0)
        tree_ids[ci + 1] = level_start + choice[-1]
        level_top_k = max(level_top_k, choice[-1] + 1)
    top_ks.append(level_top_k)
    return {i: Node(*_candidate_of(tree_ids[i], top_ks), parent=parents[i]) for i in parents}


def _candidate_of(tree_id: int, top_ks: list[int]) -> tuple[int, int]:
    """(head, rank) of a tree id in the candidates [head-1 top-k; head-2 top-k; ...]."""
    start = 0
    for head, top_k in enumerate(top_ks, start=1):
        if tree_id < start + top_k:
            return head, tree_id - start
        start += top_k
    raise IndexError(f"tree id {tree_id} past the {start} candidates")


def trt_run_py(text: str) -> list:
    """examples/run.py --medusa_choices: ``ast.literal_eval`` of the string."""
    return ast.literal_eval(text)


def trt_bench_yaml(text: str) -> list:
    """trtllm-bench latency --medusa_choices FILE: ``yaml.load(file, Loader=yaml.SafeLoader)``."""
    return yaml.load(text, Loader=yaml.SafeLoader)


@pytest.mark.parametrize("spec", FIXED_TREES)
def test_trtllm_cpp_fixed_trees(spec):
    """``trtllm`` via examples/run.py (ast.literal_eval) and ``trtllm-yaml`` via trtllm-bench
    (tensorrt_llm/bench/benchmark/low_latency.py at 000a01d, yaml SafeLoader), both into the C++ runtime's
    initTensorsFromChoices: cpp/tensorrt_llm/runtime/utils/speculativeChoicesUtils.cpp and .h at 04a2cac."""
    check_trtllm_cpp(spec)


@settings(max_examples=60, deadline=None)
@given(trees(max_rank=16, first_level_gap_free=True))
def test_trtllm_cpp_random_trees(spec):
    """As above, on random trees with ranks < 16 and a gap-free first level (TensorRT-LLM 04a2cac,
    speculativeChoicesUtils.cpp)."""
    check_trtllm_cpp(spec)


def check_trtllm_cpp(spec: TreeSpec) -> None:
    heads = spec.depth
    for fmt, parse in (("trtllm", trt_run_py), ("trtllm-yaml", trt_bench_yaml)):
        choices = parse(export_tree(spec, fmt, num_heads=heads))
        assert_same_tree(trt_cpp_layout(choices, TRTLLM_DEFAULT_MAX_DRAFT_LEN, heads), spec)


def test_trtllm_cpp_limits_are_real():
    """Why the TensorRT-LLM formats refuse rank >= 16, orphans, more paths than max_draft_len and depth above the
    heads (TensorRT-LLM 04a2cac, speculativeChoicesUtils.cpp): rank 16 packs like another path and the tree
    comes out different; an orphan is silently hung under the root; the others are refused by the engine."""
    # [0, 16] and [1, 0] pack to the same prefix: both children hang under whichever is laid out last
    collide = TreeSpec([(0,), (1,), (0, 16), (1, 0), (0, 16, 0), (1, 0, 0)])
    assert not runs_same_tree(trt_cpp_layout([list(p) for p in collide.paths], 63, 3), collide)
    with pytest.raises(TreeSpecError, match=r"rank 16.*ranks < 16.*4-bit.*--for trtllm"):
        export_tree(collide, "trtllm")
    orphan = trt_cpp_layout([[0], [1, 0]], 63, 2)
    assert orphan[2].parent == 0  # [1, 0] without [1]: hung under the root, no error
    with pytest.raises(TreeSpecError, match=r"lacks its prefix \[1\]"):
        export_tree(TreeSpec([(0,), (1, 0)]), "trtllm")
    with pytest.raises(ValueError, match="max_draft_len"):
        trt_cpp_layout([[i] for i in range(5)], max_draft_len=4, num_heads=1)
    with pytest.raises(ValueError, match="heads"):
        trt_cpp_layout([[0], [0, 0]], 63, num_heads=1)


# --------------------------------------------------------------------------- TensorRT-LLM, Python session
def _prefix_order(a: list[int], b: list[int]) -> int:
    """medusa_utils.py's path comparison: by the first differing rank; 0 when one path starts the other."""
    for x, y in zip(a, b):
        if x != y:
            return -1 if x < y else 1
    return 0


def trt_python_session_layout(choices: list[list[int]], num_heads: int) -> dict[int, Node]:
    """_medusa_setup (tensorrt_llm/runtime/medusa_utils.py), used by examples/run.py --use_py_session, read back.

    It keeps only the leaves (longest first, then in path order), counts the nodes of each level, takes each
    level's top-k as the largest rank + 1, and lays the first level out as ranks 0..top-k-1 whatever ranks the
    tree has; deeper levels get one token per distinct (prefix, rank) in leaf order, numbered after the
    previous levels' node counts. Each leaf row then names its nodes' token indices.
    """
    ordered = sorted(choices, key=functools.cmp_to_key(_prefix_order))
    leaves: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    level_counts = [0] * num_heads
    for choice in sorted(ordered, key=len, reverse=True):
        if tuple(choice) not in seen:
            leaves.append(choice)
        for i in range(len(choice)):
            if tuple(choice[: i + 1]) not in seen:
                seen.add(tuple(choice[: i + 1]))
                level_counts[i] += 1
    leaves.sort(key=functools.cmp_to_key(_prefix_order))
    top_ks = [max((leaf[i] + 1 for leaf in leaves if len(leaf) > i), default=0) for i in range(num_heads)]
    starts = [sum(top_ks[:i]) for i in range(num_heads)]
    tree_ids = list(range(top_ks[0]))
    heads = [1] * top_ks[0]
    rows = [[leaf[0]] + [-1] * (len(leaf) - 1) for leaf in leaves]
    for i in range(1, num_heads):
        last, count = None, -1
        for row, leaf in zip(rows, leaves):
            if len(leaf) <= i:
                continue
            if (tuple(leaf[:i]), leaf[i]) != last:
                last, count = (tuple(leaf[:i]), leaf[i]), count + 1
                tree_ids.append(leaf[i] + starts[i])
                heads.append(i + 1)
            row[i] = sum(level_counts[:i]) + count
    return _session_nodes(tree_ids, heads, starts, rows)


def _session_nodes(tree_ids: list[int], heads: list[int], starts: list[int], rows: list[list[int]]) -> dict[int, Node]:
    """Tokens (index t -> node t+1) with parents taken from the leaf rows (a token in no row hangs off the root)."""
    parents = {t: 0 for t in range(len(tree_ids))}
    for row in rows:
        for above, token in zip(row, row[1:]):
            parents[token] = above + 1
    nodes = {}
    for t, tree_id in enumerate(tree_ids):
        head = heads[t]
        nodes[t + 1] = Node(head=head, rank=tree_id - starts[head - 1], parent=parents[t])
    return nodes


@pytest.mark.parametrize("spec", FIXED_TREES)
def test_trtllm_python_session_fixed_trees(spec):
    """``trtllm`` via examples/run.py --use_py_session into tensorrt_llm/runtime/medusa_utils.py _medusa_setup
    (TensorRT-LLM 249d93d)."""
    choices = trt_run_py(export_tree(spec, "trtllm", num_heads=spec.depth))
    assert_same_tree(trt_python_session_layout(choices, spec.depth), spec)


@settings(max_examples=60, deadline=None)
@given(trees(max_rank=16, first_level_gap_free=True))
def test_trtllm_python_session_random_trees(spec):
    """As above, on random trees with a gap-free first level (TensorRT-LLM 249d93d, medusa_utils.py)."""
    choices = trt_run_py(export_tree(spec, "trtllm", num_heads=spec.depth))
    assert_same_tree(trt_python_session_layout(choices, spec.depth), spec)


def test_trtllm_python_session_first_level_gap_is_refused():
    """Why the TensorRT-LLM formats refuse a first-level gap (TensorRT-LLM 249d93d, medusa_utils.py): with
    ranks {0, 2} it lays out three first-level tokens and misnumbers the deeper ones, so it runs another tree."""
    gap = TreeSpec([(0,), (2,), (2, 0), (0, 0)])
    assert not runs_same_tree(trt_python_session_layout([list(p) for p in gap.paths], 2), gap)
    for fmt in ("trtllm", "trtllm-yaml", "trtllm-llmapi", "triton", "triton-pbtxt"):
        with pytest.raises(TreeSpecError, match=r"children of the root have ranks \[0, 2\], rank 1 missing.*--for trtllm"):
            export_tree(gap, fmt)
    deeper_gap = TreeSpec([(0,), (0, 2)])  # the C++ runtime and the Python session both lay it out right
    assert_same_tree(trt_python_session_layout([[0], [0, 2]], 2), deeper_gap)
    assert_same_tree(trt_cpp_layout([[0], [0, 2]], 63, 2), deeper_gap)
    export_tree(deeper_gap, "trtllm")


# --------------------------------------------------------------------------- TensorRT-LLM, LLM API
def llmapi_config(text: str):
    """The extra-options YAML's speculative_config, validated like MedusaDecodingConfig in
    tensorrt_llm/llmapi/llm_args.py: a strict pydantic model (unknown keys refused) with
    decoding_type 'Medusa', max_draft_len a non-negative int, num_medusa_heads an int and medusa_choices a
    List[List[int]]."""
    pydantic = pytest.importorskip("pydantic")

    class MedusaDecodingConfig(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        decoding_type: Literal["Medusa"]
        max_draft_len: Optional[pydantic.NonNegativeInt] = None
        num_medusa_heads: Optional[int] = None
        medusa_choices: Optional[List[List[int]]] = None

    options = yaml.safe_load(text)
    assert set(options) == {"speculative_config"}
    return MedusaDecodingConfig(**options["speculative_config"])


def check_llmapi(spec: TreeSpec, num_heads: Optional[int] = None) -> None:
    config = llmapi_config(export_tree(spec, "trtllm-llmapi", num_heads=num_heads))
    assert config.max_draft_len > 0  # the TensorRT flow asserts it, then builds the engine with it
    assert config.max_draft_len == len(spec.paths) and config.num_medusa_heads == (num_heads or spec.depth)
    assert_same_tree(trt_cpp_layout(config.medusa_choices, config.max_draft_len, config.num_medusa_heads), spec)


@pytest.mark.parametrize("spec", FIXED_TREES)
def test_trtllm_llmapi_fixed_trees(spec):
    """``trtllm-llmapi``: tensorrt_llm/llmapi/llm_args.py (TensorRT-LLM fcd3f31) MedusaDecodingConfig, whose
    max_draft_len becomes the engine's build_config.max_draft_len, then the C++ runtime (speculativeChoicesUtils.cpp
    at 04a2cac) with num_medusa_heads heads."""
    check_llmapi(spec)
    check_llmapi(spec, num_heads=spec.depth + 1)


@settings(max_examples=40, deadline=None)
@given(trees(max_rank=16, first_level_gap_free=True))
def test_trtllm_llmapi_random_trees(spec):
    """As above, on random trees (TensorRT-LLM fcd3f31 llm_args.py, 04a2cac speculativeChoicesUtils.cpp)."""
    check_llmapi(spec)


def test_trtllm_llmapi_refuses_a_string_of_choices():
    """Why ``trtllm-llmapi`` writes medusa_choices as a YAML list: llm_args.py's List[List[int]] refuses a string."""
    pydantic = pytest.importorskip("pydantic")
    with pytest.raises(pydantic.ValidationError):
        llmapi_config("speculative_config: {decoding_type: Medusa, medusa_choices: '[[0], [0, 0]]'}")


# --------------------------------------------------------------------------- Triton backend
def fill_template_split(text: str, delimiter: str) -> list[str]:
    """tools/fill_template.py's split: cut at each unescaped ``delimiter``; a backslash keeps the next character."""
    pieces, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == delimiter:
            pieces.append("".join(current))
            current = []
        elif char == "\\":
            escaped = True
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


CONFIG_TEMPLATE = """name: "tensorrt_llm"
parameters: {
  key: "medusa_choices"
    value: {
      string_value: "${medusa_choices}"
  }
}
parameters: {
  key: "decoding_mode"
    value: {
      string_value: "${decoding_mode}"
  }
}
"""


def fill_template(template: str, substitutions: str) -> str:
    """tools/fill_template.py: split the substitutions on commas, each on ':' into exactly key and value, and
    substitute them into the template (``string.Template.safe_substitute``)."""
    values = {}
    for substitution in fill_template_split(substitutions, ","):
        key, value = fill_template_split(substitution, ":")  # more than one ':' or none fails here
        assert key in template, f"key {key!r} is not in the template"
        values[key] = value
    return string.Template(template).safe_substitute(values)


def pbtxt_parameter(pbtxt: str, key: str) -> str:
    """The string_value of parameter ``key`` in a config.pbtxt."""
    match = re.search(r'key:\s*"' + key + r'"\s*value:\s*\{\s*string_value:\s*"([^"]*)"', pbtxt)
    assert match is not None, f"no parameter {key}"
    assert "\\" not in match.group(1)  # no protobuf escapes to undo
    return match.group(1)


def triton_cpp_parse(value: str) -> list[list[int]]:
    """csvStrToVecVecInt (triton_backend/inflight_batcher_llm/src/utils.cc): read up to each '}', drop a leading
    '{', parse the comma-separated ints, skip to past the next ',' and any blanks; stop at an empty piece or
    at a piece that ends the string without '}'. An empty string, an empty piece's ints or no list at all throw
    (and the backend then silently runs its default tree)."""
    if not value:
        raise ValueError("Cannot convert empty string")
    out, pos = [], 0
    while True:
        end = value.find("}", pos)
        if end < 0 or end == pos:
            break
        piece = value[pos:end]
        pos = end + 1
        out.append(_triton_cpp_ints(piece[1:] if piece.startswith("{") else piece))
        comma = value.find(",", pos)
        pos = len(value) if comma < 0 else comma + 1
        while pos < len(value) and value[pos].isspace():
            pos += 1
    if not out:
        raise ValueError("Empty vector of vector")
    return out


def _triton_cpp_ints(piece: str) -> list[int]:
    """csvStrToVecInt: comma-separated ``std::stoi``s (leading blanks, a sign, digits; trailing text ignored)."""
    if not piece:
        raise ValueError("Cannot convert empty string")
    out = []
    for item in piece.split(","):
        match = re.match(r"\s*([+-]?\d+)", item)
        if match is None:
            if not item.strip():
                break
            raise ValueError(f"stoi({item!r})")
        out.append(int(match.group(1)))
    if not out:
        raise ValueError("Empty vector")
    return out


def triton_python_parse(value: str) -> list[list[int]]:
    """parse_medusa_choices of the Python model (triton_backend/all_models/inflight_batcher_llm/tensorrt_llm/1/
    model.py): braces to brackets, ``json.loads`` inside [ ], then a non-empty list of lists of ints."""
    import json

    result = json.loads("[" + value.replace("{", "[").replace("}", "]") + "]")
    assert isinstance(result, list) and result and all(isinstance(x, list) for x in result)
    assert all(isinstance(y, int) for x in result for y in x)
    return result


def check_triton(spec: TreeSpec) -> None:
    heads = spec.depth
    escaped = export_tree(spec, "triton", num_heads=heads).strip()
    config = fill_template(CONFIG_TEMPLATE, f"medusa_choices:{escaped},decoding_mode:medusa")
    assert pbtxt_parameter(config, "decoding_mode") == "medusa"
    block = export_tree(spec, "triton-pbtxt", num_heads=heads)
    for value in (pbtxt_parameter(config, "medusa_choices"), pbtxt_parameter(block, "medusa_choices")):
        choices = triton_cpp_parse(value)
        assert triton_python_parse(value) == choices
        assert_same_tree(trt_cpp_layout(choices, TRTLLM_DEFAULT_MAX_DRAFT_LEN, heads), spec)


@pytest.mark.parametrize("spec", FIXED_TREES)
def test_triton_fixed_trees(spec):
    """``triton`` through tools/fill_template.py (TensorRT-LLM triton_backend at 2a9abd9) into the config.pbtxt
    template, and ``triton-pbtxt`` as it is; both parsed by utils.cc csvStrToVecVecInt (c8c6df0, read by
    model_state.cc 5cdd692 / model_instance_state.cc 0c8de69) and by the Python model's parse_medusa_choices
    (89fd9b7), then laid out by the C++ runtime (speculativeChoicesUtils.cpp 04a2cac)."""
    check_triton(spec)


@settings(max_examples=40, deadline=None)
@given(trees(max_rank=16, first_level_gap_free=True))
def test_triton_random_trees(spec):
    """As above, on random trees (TensorRT-LLM triton_backend 2a9abd9 / c8c6df0, runtime 04a2cac)."""
    check_triton(spec)


def test_triton_unescaped_value_breaks_fill_template():
    """Why ``triton`` escapes its commas (fill_template.py at 2a9abd9): unescaped, the value is cut at its first
    comma and the next piece has no ':' to split into key and value."""
    spec = FIXED_TREES[2]
    raw = ", ".join("{" + ", ".join(map(str, p)) + "}" for p in spec.paths)
    with pytest.raises(ValueError):
        fill_template(CONFIG_TEMPLATE, f"medusa_choices:{raw}")


def test_triton_empty_value_is_not_a_tree():
    """Why the empty tree is refused for Triton (utils.cc c8c6df0, model.py 89fd9b7): both parsers throw, and the
    C++ backend then runs its default mc_sim_7b_63 without telling."""
    with pytest.raises(ValueError):
        triton_cpp_parse("")
    with pytest.raises(AssertionError):
        triton_python_parse("")


# --------------------------------------------------------------------------- every engine format
ENGINE_FORMATS = [f for f in EXPORT_FORMATS if FORMATS[f].target is not None]


def test_every_engine_format_is_checked_here():
    """Each engine format above has a consumer test; a new format must get one."""
    assert set(ENGINE_FORMATS) == {"medusa", "medusa-list", "trtllm", "trtllm-yaml", "trtllm-llmapi", "triton",
                                   "triton-pbtxt"}


@pytest.mark.parametrize("fmt", ENGINE_FORMATS)
def test_empty_tree_is_refused_for_every_engine_format(fmt):
    with pytest.raises(TreeSpecError, match="no paths.*cannot take an empty tree.*treeopt build"):
        export_tree(TreeSpec([]), fmt, where="empty.json")


@pytest.mark.parametrize("fmt", ENGINE_FORMATS)
def test_rank_limit_is_refused_with_its_source(fmt):
    limits = BUILD_TARGETS[FORMATS[fmt].target]
    wide = TreeSpec([(r,) for r in range(limits.max_rank + 1)])
    with pytest.raises(TreeSpecError, match=rf"t.json: paths\[{limits.max_rank}\].*rank {limits.max_rank}.*"
                                            rf"ranks < {limits.max_rank}.*--max-children {limits.max_rank}"):
        export_tree(wide, fmt, where="t.json")


@pytest.mark.parametrize("fmt", ENGINE_FORMATS + ["json"])
def test_depth_above_num_heads_is_refused(fmt):
    with pytest.raises(TreeSpecError, match=r"t.json: paths\[2\] = \[0, 0, 0\] has depth 3 but --num-heads is 2.*"
                                            r"--max-depth 2"):
        export_tree(TreeSpec([(0,), (0, 0), (0, 0, 0)]), fmt, num_heads=2, where="t.json")


@pytest.mark.parametrize("fmt", [f for f in ENGINE_FORMATS if FORMATS[f].target == "trtllm"])
def test_trtllm_depth_limit_of_the_prefix_is_refused(fmt):
    chain = TreeSpec([(0,) * d for d in range(1, 18)])
    with pytest.raises(TreeSpecError, match=r"depth 17.*64 bits.*depth <= 16.*--max-depth 16"):
        export_tree(chain, fmt, where="t.json")


@pytest.mark.parametrize("fmt", ["trtllm", "trtllm-yaml", "triton", "triton-pbtxt"])
def test_max_draft_len_default_and_option(fmt):
    """Default 63 (examples/medusa/convert_checkpoint.py --max_draft_len, TensorRT-LLM b93e14c)."""
    big = TreeSpec([(0,) * d for d in range(1, 5)] + [(r,) for r in range(1, 16)] + [(r, c) for r in range(1, 4) for c in range(16)])
    assert len(big.paths) == 67
    with pytest.raises(TreeSpecError, match=r"67 paths, but max_draft_len is 63 \(the engine default of "
                                            r"examples/medusa/convert_checkpoint.py; pass --max-draft-len"):
        export_tree(big, fmt, where="t.json")
    export_tree(big, fmt, max_draft_len=67)
    with pytest.raises(TreeSpecError, match=r"4 paths, but max_draft_len is 3 \(--max-draft-len\).*--budget 3"):
        export_tree(FIXED_TREES[1], fmt, max_draft_len=3, where="t.json")


def test_llmapi_writes_max_draft_len_and_refuses_a_smaller_one():
    text = export_tree(FIXED_TREES[2], "trtllm-llmapi", max_draft_len=10, num_heads=5)
    config = yaml.safe_load(text)["speculative_config"]
    assert (config["max_draft_len"], config["num_medusa_heads"]) == (10, 5)
    with pytest.raises(TreeSpecError, match=r"6 paths, but max_draft_len is 5 \(--max-draft-len\)"):
        export_tree(FIXED_TREES[2], "trtllm-llmapi", max_draft_len=5)


# --------------------------------------------------------------------------- vLLM's Medusa (checkpoint + speculative_config)
VLLM_SOURCE = "vllm-project/vllm (main, 2026-12)"


def vllm_medusa_config(folder: Path, num_speculative_tokens: int | None) -> dict:
    """What vLLM makes of the heads folder's config.json ({VLLM_SOURCE}: vllm/transformers_utils/configs/medusa.py
    MedusaConfig.from_pretrained, then vllm/config/speculative.py).

    Keys holding "num" and "heads" become num_heads, "num" and "layers" num_hidden_layers; truncated_vocab_size
    defaults to vocab_size; a given num_speculative_tokens is written through the num_lookahead_tokens setter,
    which sets num_heads. Without num_speculative_tokens (MedusaConfig has no n_predict) vLLM raises."""
    raw = json.loads((folder / "config.json").read_text())
    config = {}
    for key, value in raw.items():
        if "num" in key and "heads" in key:
            key = "num_heads"
        elif "num" in key and "layers" in key:
            key = "num_hidden_layers"
        config[key] = value
    defaults = {"hidden_size": 4096, "vocab_size": 32001, "num_heads": 5, "num_hidden_layers": 1}
    config = {**defaults, **config}
    if config.get("truncated_vocab_size") is None:
        config["truncated_vocab_size"] = config["vocab_size"]
    assert config.get("model_type") == "medusa"  # what makes vLLM pick MedusaConfig and detect method medusa
    if num_speculative_tokens is None:
        raise ValueError("A speculative model was provided, but `num_speculative_tokens` was not provided")
    config["num_heads"] = num_speculative_tokens
    return config


@dataclass
class VllmMedusa:
    """vLLM's Medusa model as loaded ({VLLM_SOURCE}: vllm/model_executor/models/medusa.py): ``params`` by name."""

    config: dict
    params: dict
    token_map: Optional["torch.Tensor"]

    def propose(self, hidden: "torch.Tensor") -> "torch.Tensor":
        """vllm/v1/spec_decode/medusa.py MedusaProposer.propose: per head, the residual blocks, the (truncated) lm_head,
        logits scattered into the whole vocabulary with -inf elsewhere when a token_map is set, argmax. [B, H] -> [B, K]."""
        import torch

        drafts = []
        for i in range(self.config["num_heads"]):
            x = hidden
            for j in range(self.config["num_hidden_layers"]):
                weight = self.params[f"blocks.{i}.layers.{j}.weight"]
                bias = self.params.get(f"blocks.{i}.layers.{j}.bias")
                x = x + torch.nn.functional.silu(torch.nn.functional.linear(x, weight, bias))
            lm = self.params["lm_head.weight"] if self.config.get("original_lm_head") else self.params[f"lm_heads.{i}.weight"]
            logits = x @ lm.T
            if self.token_map is not None:
                full = torch.full((*logits.shape[:-1], self.config["vocab_size"]), -torch.inf)
                full[..., self.token_map] = logits
                logits = full
            drafts.append(logits.argmax(-1))
        return torch.stack(drafts, dim=1)


def vllm_load(folder: Path, num_speculative_tokens: int) -> VllmMedusa:
    """vLLM's Medusa.__init__ and load_weights on every *.safetensors of the folder ({VLLM_SOURCE}:
    vllm/model_executor/models/medusa.py; the loader reads every weight file of the folder).

    Parameters: blocks.{i}.layers.{j}.weight [H, H] (+ .bias with medusa_fc_bias) for the num_heads heads vLLM
    builds; one lm_head.weight with original_lm_head, else lm_heads.{i}.weight, [truncated_vocab_size, H]. Loading
    strips "medusa_heads.", keeps token_map only when truncated_vocab_size < vocab_size, maps lm_heads.0.weight to
    lm_head.weight under original_lm_head, ignores names it has no parameter for, takes the token_map's rows of a
    larger lm_head, and asserts a token_map wherever the vocabulary is truncated. The weight loader copies a tensor
    into its parameter, whose shape must match. Parameters no file supplied stay unloaded (returned as None)."""
    import torch
    from safetensors.torch import load_file

    config = vllm_medusa_config(folder, num_speculative_tokens)
    hidden, truncated = config["hidden_size"], config["truncated_vocab_size"]
    shapes = {}
    for i in range(config["num_heads"]):
        for j in range(config["num_hidden_layers"]):
            shapes[f"blocks.{i}.layers.{j}.weight"] = (hidden, hidden)
            if config.get("medusa_fc_bias", False):
                shapes[f"blocks.{i}.layers.{j}.bias"] = (hidden,)
        if not config.get("original_lm_head", False):
            shapes[f"lm_heads.{i}.weight"] = (truncated, hidden)
    if config.get("original_lm_head", False):
        shapes["lm_head.weight"] = (truncated, hidden)
    weights = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(file))
    token_map, chosen = None, {}
    for name, tensor in weights.items():
        name = name.replace("medusa_heads.", "")
        if name == "token_map":
            if truncated < config["vocab_size"]:
                token_map = tensor
        elif name in shapes:
            chosen[name] = tensor
        elif config.get("original_lm_head", False) and name == "lm_heads.0.weight":
            chosen["lm_head.weight"] = tensor
    params = dict.fromkeys(shapes)
    for name, tensor in chosen.items():
        if "lm_head" in name and token_map is not None and tensor.shape[0] > token_map.shape[0]:
            tensor = tensor[token_map]
        assert tuple(tensor.shape) == shapes[name], (name, tuple(tensor.shape), shapes[name])
        params[name] = tensor.float()
    assert truncated == config["vocab_size"] or token_map is not None
    return VllmMedusa(config, params, token_map)


def vllm_speculative_config(text: str) -> dict:
    """``--speculative-config`` JSON as vLLM's SpeculativeConfig reads the fields treeopt writes ({VLLM_SOURCE}:
    vllm/config/speculative.py): method one of its methods, model the draft (heads) folder, num_speculative_tokens > 0."""
    config = json.loads(text)
    assert config["method"] == "medusa"
    assert isinstance(config["num_speculative_tokens"], int) and config["num_speculative_tokens"] > 0
    assert set(config) <= {"method", "model", "num_speculative_tokens"}
    return config


def _vllm_heads(shared: bool, draft: bool):
    """Random plain heads of the tiny model (a draft vocabulary of its odd tokens, in a scrambled order, if asked)."""
    import torch

    from conftest import tiny_heads, tiny_model

    model = tiny_model()
    heads = tiny_heads(model, num_heads=3, shared=shared)
    if draft:
        heads.set_draft_vocab(torch.randperm(32, generator=torch.Generator().manual_seed(0)) * 2 + 1)
    return model, heads


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("draft", [False, True])
def test_vllm_loads_the_exported_heads_and_proposes_what_the_engine_view_guesses(tmp_path, shared, draft):
    """export-heads' checkpoint through vLLM's config parsing and weight-name mapping: every tensor lands on the
    parameter it came from, and vLLM's proposals (each head's argmax, over the token_map's tokens when the heads have
    a draft vocabulary) are the top-1 guesses of the heads as ``calibrate --engine vllm`` runs them."""
    import torch

    from treeopt.vllm import vllm_checkpoint, write_vllm_checkpoint

    model, heads = _vllm_heads(shared, draft)
    base = model.get_output_embeddings().weight
    write_vllm_checkpoint(vllm_checkpoint(heads, base, "heads"), tmp_path)
    loaded = vllm_load(tmp_path, num_speculative_tokens=3)
    assert all(v is not None for v in loaded.params.values())
    state = heads.checkpoint_state()
    for i in range(3):
        assert torch.equal(loaded.params[f"blocks.{i}.layers.0.weight"], state[f"{i}.0.linear.weight"])
        assert torch.equal(loaded.params[f"blocks.{i}.layers.0.bias"], state[f"{i}.0.linear.bias"])
        lm = base if shared else state[f"{i}.1.weight"]
        rows = lm if not draft else lm[heads.draft_vocab]
        assert torch.equal(loaded.params["lm_head.weight" if shared else f"lm_heads.{i}.weight"], rows)
    assert (loaded.token_map is not None) == draft
    h = torch.randn(64, model.config.hidden_size)
    proposed = loaded.propose(h)
    assert torch.equal(proposed, heads.engine_view("vllm").candidates(h, 1)[..., 0])
    if draft:
        assert (proposed % 2 == 1).all()  # only the draft vocabulary's (odd) tokens
    # fewer speculative tokens: vLLM builds that many heads and loads the first ones
    assert torch.equal(vllm_load(tmp_path, num_speculative_tokens=2).propose(h), proposed[:, :2])


def test_vllm_leaves_heads_the_checkpoint_lacks_unloaded(tmp_path):
    """Why export refuses a chain deeper than the folder's heads: vLLM builds num_speculative_tokens heads and loads
    what the checkpoint has, leaving the others as they were allocated, without an error."""
    from treeopt.vllm import vllm_checkpoint, write_vllm_checkpoint

    model, heads = _vllm_heads(True, False)
    write_vllm_checkpoint(vllm_checkpoint(heads, model.get_output_embeddings().weight, "heads"), tmp_path)
    loaded = vllm_load(tmp_path, num_speculative_tokens=4)
    assert loaded.params["blocks.3.layers.0.weight"] is None and loaded.params["blocks.2.layers.0.weight"] is not None


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3))
def test_vllm_speculative_config_runs_the_chain_treeopt_evaluated(tmp_path_factory, depth):
    """export --format vllm: vLLM reads method medusa, the folder export-heads wrote, and a chain as deep as the tree,
    which is the tree treeopt evaluated (a chain of rank-0 guesses: each head's argmax)."""
    from treeopt.vllm import export_text, vllm_checkpoint, write_vllm_checkpoint

    folder = tmp_path_factory.mktemp("vllm")
    model, heads = _vllm_heads(True, True)
    write_vllm_checkpoint(vllm_checkpoint(heads, model.get_output_embeddings().weight, "heads"), folder)
    chain = TreeSpec([(0,) * d for d in range(1, depth + 1)])
    config = vllm_speculative_config(export_text(chain, "vllm", folder, "t.json"))
    assert Path(config["model"]) == folder.resolve()
    loaded = vllm_load(Path(config["model"]), config["num_speculative_tokens"])
    assert [(0,) * (k + 1) for k in range(loaded.config["num_heads"])] == chain.paths  # head k: depth k+1, rank 0
    with pytest.raises(TreeSpecError, match="rank 1.*ranks < 1.*--for vllm"):
        export_text(TreeSpec(chain.paths + [(1,)]), "vllm", folder, "t.json")
