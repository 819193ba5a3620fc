"""Acceptance rules: which tree node a verify step ends at, and the bonus token after it. One seam for every rule.

``make_rule`` is the one place a rule is picked from the sampling settings (``sampling.py`` says what each does):

- ``MatchRule`` runs greedy and sample-and-match: from the root, the target's own token at the current node (its
  argmax, or its keyed draw) either equals one of the node's children, and the walk moves there, or it is the bonus
  token and the step ends. Only the nodes on the accepted path are drawn at, so sampling costs one draw per emitted
  token, not one per tree node. Siblings hold distinct tokens, so at most one child matches: the node reached is
  the deepest whose whole path equals the target's tokens.
- ``TypicalRule`` (lossy, on request): a node is accepted while its probability under its parent beats
  ``min(epsilon, delta * exp(-entropy))``; the deepest such node (the most likely path among equally deep ones),
  then the target's own draw there as the bonus.

A rule sees each row's tree tokens [B, N], the logits at every node [B, N, V], each row's prompt key and the
absolute position of its root; node n of row b predicts the token at position ``root_positions[b] + depth[n] + 1``.
"""

from __future__ import annotations

import torch

from .draws import draw, make_noise, warp
from .sampling import SamplingConfig
from .tree import TreeBuffers


class Rule:
    """What every rule shares: the target's own token at a node (``draws.draw``) and the noise behind it."""

    def __init__(self, buffers: TreeBuffers, sampling: SamplingConfig, vocab: int, device: torch.device):
        self.buffers, self.sampling = buffers, sampling
        self.noise = make_noise(sampling, vocab, device)

    def first(self, logits: torch.Tensor, keys: list[int], positions: list[int]) -> torch.Tensor:
        """The first new token of each row after the prefill: logits [B, V], drawn for absolute ``positions``."""
        return draw(logits, self.sampling, self.noise, keys, positions)

    def restart(self) -> None:
        """Before a new batch: unkeyed noise starts again at its seed (keyed noise has no state)."""
        self.noise = make_noise(self.sampling, self.noise.vocab, self.noise.device)

    def accept(self, tree_tokens: torch.Tensor, logits: torch.Tensor, keys: list[int],
               root_positions: list[int]) -> tuple[list[int], list[int]]:
        """tree_tokens [B, N], logits [B, N, V] -> (the node each row ends at, each row's bonus token)."""
        raise NotImplementedError


class MatchRule(Rule):
    """Greedy or sample-and-match: the deepest node whose path equals the target's own tokens (lossless)."""

    def accept(self, tree_tokens: torch.Tensor, logits: torch.Tensor, keys: list[int],
               root_positions: list[int]) -> tuple[list[int], list[int]]:
        tokens = tree_tokens.tolist()  # [B][N]
        batch, n = tree_tokens.shape
        flat = logits.reshape(batch * n, logits.shape[-1])  # [B*N, V]
        nodes, bonus = [0] * batch, [0] * batch
        walking, depth = list(range(batch)), 0
        while walking:
            at = [r * n + nodes[r] for r in walking]
            here = flat[at[0] : at[0] + 1] if len(at) == 1 else flat[at]  # [rows, V]: the logits at each row's node
            targets = draw(here, self.sampling, self.noise, [keys[r] for r in walking],
                           [root_positions[r] + depth + 1 for r in walking]).tolist()
            still = []
            for r, target in zip(walking, targets):
                child = self.match(tokens[r], nodes[r], target)
                if child is None:
                    bonus[r] = target
                else:
                    nodes[r] = child
                    still.append(r)
            walking = still
            depth += 1
        return nodes, bonus

    def match(self, tokens: list[int], node: int, target: int) -> int | None:
        """The child of ``node`` whose token (in this row's ``tokens`` [N]) is ``target``, or None."""
        return next((c for c in self.buffers.children[node] if tokens[c] == target), None)


class TypicalRule(Rule):
    """Upstream Medusa's typical acceptance (lossy): p(x) > min(epsilon, delta * exp(-H)) along the path."""

    def accept(self, tree_tokens: torch.Tensor, logits: torch.Tensor, keys: list[int],
               root_positions: list[int]) -> tuple[list[int], list[int]]:
        b, s = self.buffers, self.sampling
        logp = torch.log_softmax(warp(logits, s), dim=-1)  # [B, N, V]
        probs = logp.exp()
        entropy = -(probs * logp.clamp(min=torch.finfo(logp.dtype).min)).sum(-1)  # [B, N]; 0 * -inf counts 0
        node_logp = logp[:, b.parents].gather(2, tree_tokens[..., None])[..., 0]  # [B, N]: log p of each node under its parent
        threshold = torch.minimum(torch.full_like(entropy, s.posterior_threshold), s.posterior_alpha * torch.exp(-entropy))
        ok = node_logp.exp() > threshold[:, b.parents]
        ok[:, 0] = True
        node_logp = node_logp.clamp(min=torch.finfo(node_logp.dtype).min)
        node_logp[:, 0] = 0.0
        accepted = ~(b.ancestor_mask[None] & ~ok[:, None, :]).any(dim=-1)  # [B, N]: every node on its path passes
        path_logp = node_logp @ b.ancestor_mask.to(node_logp.dtype).T  # [B, N]
        depth = torch.where(accepted, b.depths, -1)
        longest = accepted & (depth == depth.max(dim=-1, keepdim=True).values)
        best = torch.where(longest, path_logp, float("-inf")).argmax(dim=-1)  # [B]
        rows = torch.arange(len(best), device=best.device)
        positions = [p + d + 1 for p, d in zip(root_positions, b.depths[best].tolist())]
        bonus = draw(logits[rows, best], s, self.noise, keys, positions)
        return best.tolist(), bonus.tolist()


def make_rule(buffers: TreeBuffers, sampling: SamplingConfig, vocab: int, device: torch.device) -> Rule:
    """The rule for these settings: the one place it is picked."""
    return (TypicalRule if sampling.rule == "typical" else MatchRule)(buffers, sampling, vocab, device)
