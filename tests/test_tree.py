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
