import torch

from medusa_runtime.spec import TreeSpec
from medusa_runtime.tree import build_buffers


def test_buffers_of_a_small_tree():
    spec = TreeSpec([(0,), (1,), (0, 0), (0, 1), (1, 0)])
    b = build_buffers(spec)
    # nodes: root, (0,), (1,), (0,0), (0,1), (1,0)
    assert b.num_nodes == 6 and b.topk == 2 and b.num_heads_used == 2
    assert b.depths.tolist() == [0, 1, 1, 2, 2, 2]
    assert b.parents.tolist() == [0, 0, 0, 1, 1, 2]
    # flat candidates: [root, head1 r0, head1 r1, head2 r0, head2 r1]
    assert b.candidate_index.tolist() == [0, 1, 2, 3, 4, 3]
    assert b.ancestor_mask[5].tolist() == [True, False, True, False, False, True]
    assert b.root_paths[5].tolist() == [0, 2, 5]
    assert (b.attn_bias[5] == 0).tolist() == b.ancestor_mask[5].tolist()


def test_children_listed_before_parents_are_reordered():
    b = build_buffers(TreeSpec([(0, 0), (0,)]))
    assert b.depths.tolist() == [0, 1, 2]
    assert b.root_paths[2].tolist() == [0, 1, 2]


def test_empty_tree_is_just_the_root():
    b = build_buffers(TreeSpec([]))
    assert b.num_nodes == 1 and b.ancestor_mask.tolist() == [[True]]
    assert torch.equal(b.depths, torch.tensor([0]))


def test_depth_expansions_name_each_parents_path_and_each_childs_rank():
    spec = TreeSpec([(0,), (1,), (0, 0), (0, 2), (1, 0), (0, 0, 1)])
    b = build_buffers(spec)
    nodes = [()] + sorted(spec.paths, key=len)  # the buffers' node order
    assert [e.depth for e in b.expansions] == [0, 1, 2] and [e.topk for e in b.expansions] == [2, 3, 2]
    for e in b.expansions:
        assert sorted(child for child, _, _ in e.children) == [i for i, p in enumerate(nodes) if len(p) == e.depth + 1]
        for child, parent, rank in e.children:
            path = nodes[child]
            assert len(path) == e.depth + 1 and path[-1] == rank
            assert [nodes[i] for i in e.parent_paths[parent]] == [path[:j] for j in range(1, e.depth + 1)]
    assert e.parent_paths == [[1, 3]]  # only (0, 0) has children at depth 2; (0, 2) and (1, 0) do not
