"""Tree buffers: everything the decoding step needs about a tree, computed once per tree.

Nodes are ordered root first, then by depth (stable in spec order), so a parent always precedes its
children and the node at depth j of any root path has index >= j (which makes the in-place K/V move
after acceptance safe). Candidates live in a flat vector ``[root; head1 top-k; head2 top-k; ...]``.
Sequential heads guess per path instead: ``expansions`` lists, per depth, the nodes that have children, the
draft tokens on their paths and where each child's rank is found (see ``DepthExpansion``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .spec import TreeSpec


@dataclass
class DepthExpansion:
    """The children of one depth d, guessed by head d for each parent's own path (sequential heads, context lookup).
    Plain lists: the decoder fills a few tokens per row from them, where tensor indexing would cost more than the work."""

    depth: int  # d: parents are at depth d, children at d+1, guessed by head d (0-based)
    topk: int  # 1 + the largest child rank at this depth
    parent_paths: list[list[int]]  # [P][d]: node indices of each parent's draft tokens (depths 1..d)
    children: list[tuple[int, int, int]]  # [C]: (node index of a child, which of the P parents it hangs under, its rank)


@dataclass
class TreeBuffers:
    num_nodes: int  # N = tokens per verify step, root included
    topk: int  # candidates taken from each head
    num_heads_used: int  # depth of the tree (heads it reads)
    ancestor_mask: torch.Tensor  # [N, N] bool: node i sees node j (j is i or an ancestor of i)
    attn_bias: torch.Tensor  # [N, N] float: 0 where visible, dtype-min elsewhere
    depths: torch.Tensor  # [N] long: position offset of each node (root 0)
    parents: torch.Tensor  # [N] long: parent node index (root: 0)
    candidate_index: torch.Tensor  # [N] long: index of each node's token in the flat candidate vector
    root_paths: torch.Tensor  # [N, D+1] long: node indices from the root down to each node, padded with 0
    expansions: list[DepthExpansion]  # one per depth 0..D-1 (used with sequential heads)
    children: list[list[int]]  # [N][*]: each node's children (node indices), for the acceptance walk


def _node_order(paths: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    return [()] + sorted(paths, key=len)  # sorted() is stable: spec order within a depth


def build_buffers(spec: TreeSpec, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TreeBuffers:
    """Buffers for a validated spec, on ``device``; ``dtype`` is the attention bias dtype (the model's)."""
    device = torch.device(device)
    topk = max(spec.topk, 1)
    nodes = _node_order(list(spec.paths))
    index = {p: i for i, p in enumerate(nodes)}
    n = len(nodes)
    depth = max((len(p) for p in nodes), default=0)
    ancestor = torch.zeros(n, n, dtype=torch.bool)
    root_paths = torch.zeros(n, depth + 1, dtype=torch.long)
    parents = torch.zeros(n, dtype=torch.long)
    cand = torch.zeros(n, dtype=torch.long)
    for i, p in enumerate(nodes):
        chain = [index[p[:d]] for d in range(len(p) + 1)]  # root, ..., node
        ancestor[i, chain] = True
        root_paths[i, : len(chain)] = torch.tensor(chain)
        if p:
            parents[i] = index[p[:-1]]
            cand[i] = 1 + (len(p) - 1) * topk + p[-1]
    expansions = []
    for d in range(depth):
        kids = [q for q in nodes if len(q) == d + 1]
        parents_d = list(dict.fromkeys(q[:d] for q in kids))  # the depth-d nodes with children, each once
        slot = {p: i for i, p in enumerate(parents_d)}
        expansions.append(DepthExpansion(
            depth=d,
            topk=1 + max(q[-1] for q in kids),
            parent_paths=[[index[p[:j]] for j in range(1, d + 1)] for p in parents_d],
            children=[(index[q], slot[q[:d]], q[-1]) for q in kids],
        ))
    bias = torch.zeros(n, n, dtype=dtype)
    bias.masked_fill_(~ancestor, torch.finfo(dtype).min)
    return TreeBuffers(
        num_nodes=n,
        topk=topk,
        num_heads_used=depth,
        ancestor_mask=ancestor.to(device),
        attn_bias=bias.to(device),
        depths=torch.tensor([len(p) for p in nodes], dtype=torch.long, device=device),
        parents=parents.to(device),
        candidate_index=cand.to(device),
        root_paths=root_paths.to(device),
        expansions=expansions,
        children=[[i for i, q in enumerate(nodes) if q and index[q[:-1]] == j] for j in range(n)],
    )
