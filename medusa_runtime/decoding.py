"""Medusa tree decoding of one or more sequences (batch size B) over a Hugging Face causal LM.

Per step, for every row of the batch: candidates from the heads' top-k (or from an oracle; heads with context
lookup put a token copied from the row's own text first, ``lookup.py``), one forward over
the B x N tree tokens with a per-row tree attention bias and explicit per-row positions into a preallocated
KV cache (``kv_cache.TreeKVCache``: each row has its own length and write position, nothing is padded on the
left), the acceptance rule per row (``acceptance.py``: greedy, sample-and-match or typical; draws keyed by the
row's prompt and position, ``draws.py``), then each row's accepted path moved into place. Rows stop
independently at EOS or the token limit and leave the batch at once (their cache rows are dropped), so a
finished row costs nothing more. The model is driven through its public forward (``attention_mask`` as a
4-D additive bias, ``position_ids``, the cache); logits are ``lm_head(last_hidden_state)``, so models with
logit soft-capping or scaling are refused. This module does not load models or heads, and does not time
anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .acceptance import make_rule
from .draws import prompt_key
from .kv_cache import TreeKVCache
from .layout import prepare_kernels
from .lookup import ContextIndex, merge
from .prefix import PrefixKVCache
from .sampling import SamplingConfig  # noqa: F401  (re-exported: callers build it with the decoder)
from .spec import TreeSpec
from .tree import TreeBuffers, build_buffers


@dataclass
class DecodeResult:
    tokens: list[int]  # the new tokens, EOS included when it ended the answer
    steps: int  # forward passes that produced tokens, prefill included
    emitted_per_step: list[int] = field(default_factory=list)  # tokens each of those passes produced
    stop_reason: str = "length"  # "eos" or "length"

    @property
    def tokens_per_step(self) -> float:
        return len(self.tokens) / max(self.steps, 1)


@dataclass
class DecodeState:
    """What a batch of sequences carries between steps; row i of every tensor is ``rows[i]`` of the batch."""

    cache: TreeKVCache  # per-row lengths: the root of row i goes at position cache.lengths[i]
    tree_bias: torch.Tensor  # [B, 1, N, max_len] additive attention bias of the verify forward
    hidden: torch.Tensor  # [B, H] what the heads read at each row's last accepted token: its last hidden state, or
    # with prefix attention the prefix layer's output there
    root: torch.Tensor  # [B] each row's next token, already emitted, not yet in the cache
    rows: list[int]  # which prompts of the batch are still decoding
    keys: list[int]  # each row's prompt key: keys its sampled draws (draws.py)
    emitted: list[int]  # tokens each row has emitted so far (its oracle's offset)
    indexes: list[ContextIndex] | None = None  # heads with context lookup only: each row's text so far (root included)
    prefix: PrefixKVCache | None = None  # heads with prefix attention only: its keys and values of each row's answer so far

    @property
    def batch_size(self) -> int:
        return len(self.rows)

    def keep(self, keep: list[int]) -> None:
        """Keep only these rows (indices into the current rows): finished rows leave the batch."""
        if keep == list(range(len(self.rows))):
            return
        self.cache.keep_rows(keep)
        index = torch.tensor(keep, dtype=torch.long, device=self.hidden.device)
        self.tree_bias = self.tree_bias.index_select(0, index)
        self.hidden, self.root = self.hidden.index_select(0, index), self.root.index_select(0, index)
        self.rows = [self.rows[i] for i in keep]
        self.keys = [self.keys[i] for i in keep]
        self.emitted = [self.emitted[i] for i in keep]
        if self.indexes is not None:
            self.indexes = [self.indexes[i] for i in keep]
        if self.prefix is not None:
            self.prefix.keep_rows(keep)


class PromptTooLongError(ValueError):
    pass


def _check_supported(model) -> None:
    config = model.config
    for attr in ("final_logit_softcapping", "logit_scale"):
        if getattr(config, attr, None) not in (None, 1.0):
            raise NotImplementedError(f"{config.model_type}: {attr} is set; this runtime computes logits as lm_head(h) only")


def check_tree_fits_heads(tree: TreeSpec, heads, vocab_size: int) -> None:
    """ValueError unless every level of the tree has a head and every rank is among the tokens the heads rank."""
    if tree.depth > heads.num_heads:
        raise ValueError(f"tree depth {tree.depth} exceeds the {heads.num_heads} loaded heads; "
                         f"use a tree of depth <= {heads.num_heads}")
    if tree.topk > heads.guess_count(vocab_size):
        raise ValueError(f"the tree uses rank {tree.topk - 1} but the heads guess from only "
                         f"{heads.guess_count(vocab_size)} tokens; use a tree with smaller ranks (treeopt build --max-children)")


class MedusaDecoder:
    """Decodes with a fixed tree. Buffers are built once here; ``generate_batch`` runs prefill then steps."""

    def __init__(self, model, heads=None, tree: TreeSpec | None = None, eos_token_ids=(), sampling: SamplingConfig | None = None):
        _check_supported(model)
        self.model = model
        self.base = model.base_model
        self.lm_head = model.get_output_embeddings()
        self.heads = heads
        self.lookup = heads.config.context_lookup if heads is not None else None
        self.prefix = heads.prefix if heads is not None else None  # the heads' prefix-attention layer, if any
        self.tree = tree or TreeSpec([])
        self.eos = set(eos_token_ids)
        self.sampling = sampling or SamplingConfig()
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        if heads is not None:
            check_tree_fits_heads(self.tree, heads, model.config.vocab_size)
        self.buffers: TreeBuffers = build_buffers(self.tree, self.device, self.dtype)
        # node -> the nodes on its path, root first (what the cache keeps when that node is accepted)
        self._path_of = [path[: depth + 1] for path, depth in zip(self.buffers.root_paths.tolist(), self.buffers.depths.tolist())]
        self.vocab_size = model.config.vocab_size
        self.rule = make_rule(self.buffers, self.sampling, self.vocab_size, self.device)  # restarted by every prefill

    # ------------------------------------------------------------------ cache and mask
    def _new_cache(self, max_len: int, batch_size: int) -> TreeKVCache:
        window = getattr(self.model.config, "sliding_window", None)
        if window is not None and getattr(self.model.config, "use_sliding_window", True) and window < max_len:
            raise NotImplementedError(f"sliding-window attention (window {window}) shorter than the {max_len} tokens "
                                      f"needed is not supported; lower --max-new-tokens or the prompt length")
        return TreeKVCache(self.model.config.num_hidden_layers, max_len, batch_size, self.device)

    def _forward(self, tokens: torch.Tensor, positions: torch.Tensor, bias: torch.Tensor | None, cache: TreeKVCache) -> torch.Tensor:
        """tokens, positions: [B, T]; bias: [B, 1, T, span] or None (every row attends to everything). Returns [B, T, H]."""
        out = self.base(input_ids=tokens, position_ids=positions, attention_mask=bias, cache=cache, use_cache=True)
        return out.last_hidden_state

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """lm_head over the tree tokens: hidden [B, N, H] -> [B, N, V] (on CPU a oneDNN-packed linear, layout.py)."""
        return self.lm_head(hidden)

    # ------------------------------------------------------------------ candidates
    def _head_candidates(self, hidden: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
        """hidden: [B, H] of each row's last accepted node, root: [B] the token after it -> top-k tokens [B, D, topk]
        of the heads the tree reads (root-conditioned heads read the root too; plain Medusa heads ignore it)."""
        return self.heads.candidates(hidden, self.buffers.topk, self.buffers.num_heads_used, root=root)

    def _tree_tokens_by_depth(self, state: DecodeState) -> torch.Tensor:
        """Heads whose guesses depend on the path (sequential heads, context lookup): the tree's tokens depth by depth,
        each node's children guessed by the next head for that node's own path; one head call per depth over every
        row and node of it, none at a depth that needs only rank 0 where the lookup proposes for every node. The
        tokens live in Python lists until the end: a depth fills a few of them per row. -> [B, N]"""
        b = self.buffers
        tokens = [[root] + [0] * (b.num_nodes - 1) for root in state.root.tolist()]  # [B][N]
        h, r = state.hidden[:, None, :], state.root[:, None]  # [B, 1, H], [B, 1]: shared by every node of a row
        for level in b.expansions:
            paths = [[[row[n] for n in nodes] for nodes in level.parent_paths] for row in tokens]  # [B][P][d]
            proposals = None
            if self.lookup is not None:  # [B][P]: each node's copy from its row's text followed by its path (-1: none)
                proposals = [[index.propose(p) for p in row] for index, row in zip(state.indexes, paths)]
            if proposals is not None and level.topk == 1 and min(min(row) for row in proposals) >= 0:
                top = [[[p] for p in row] for row in proposals]  # rank 0 is the proposal everywhere: the head has nothing to add
            else:
                path = torch.tensor(paths, dtype=torch.long, device=self.device).reshape(len(tokens), len(level.parent_paths), level.depth)
                ranked = self.heads.path_candidates(level.depth, h, r, path, level.topk)  # [B, P, topk]
                if proposals is not None:
                    ranked = merge(ranked, torch.tensor(proposals, dtype=torch.long, device=self.device))
                top = ranked.tolist()
            for row, row_top in zip(tokens, top):
                for child, parent, rank in level.children:
                    row[child] = row_top[parent][rank]
        return torch.tensor(tokens, dtype=torch.long, device=self.device)

    def _oracle_candidates(self, references: list[list[int]], emitted: list[int]) -> torch.Tensor:
        """Rank 0 of head k is the reference token k+1 steps past the root; other ranks are wrong on purpose. -> [B, D, topk]"""
        depth, topk = self.buffers.num_heads_used, self.buffers.topk
        rows = []
        for reference, done in zip(references, emitted):
            true = [reference[done + k] if done + k < len(reference) else 0 for k in range(depth)]
            rows.append([[(t + r) % self.vocab_size for r in range(topk)] for t in true])
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def _extend_prefix(self, prefix: PrefixKVCache, hidden_all: torch.Tensor, paths: list[list[int]]) -> torch.Tensor:
        """The accepted path's hidden states (root first) join each row's prefix-attention cache: hidden_all [B, N, H],
        paths [B][len] node indices -> [B, H], the prefix layer's output at each row's last accepted token."""
        width = max(len(path) for path in paths)
        nodes = torch.tensor([path + path[-1:] * (width - len(path)) for path in paths], device=self.device)  # [B, T]
        rows = hidden_all.gather(1, nodes[..., None].expand(-1, -1, hidden_all.shape[-1]))  # [B, T, H]
        return self.prefix.extend(prefix, rows, [len(path) for path in paths])

    # ------------------------------------------------------------------ the loop
    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], max_new_tokens: int) -> DecodeState:
        """Check sizes, allocate the cache, run the prompts (right-padded to the longest) and emit each row's
        first token."""
        b = self.buffers
        if not prompts:
            raise ValueError("no prompts to decode")
        lengths = [len(p) for p in prompts]
        if min(lengths) == 0:
            raise ValueError(f"prompt {lengths.index(0)} is empty")
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and max(lengths) + max_new_tokens > limit:
            raise PromptTooLongError(f"prompt of {max(lengths)} tokens + {max_new_tokens} new tokens exceeds the model's "
                                     f"context of {limit}; shorten the prompt or lower --max-new-tokens")
        self.rule.restart()  # unkeyed noise starts again at its seed: a seed fixes every call's output
        batch, longest = len(prompts), max(lengths)
        prepare_kernels(self.model, [rows * b.num_nodes for rows in range(1, batch + 1)])  # rows leave as they finish
        max_len = longest + max_new_tokens + b.num_nodes
        cache = self._new_cache(max_len, batch)
        neg = torch.finfo(self.dtype).min
        tokens = torch.tensor([p + [p[-1]] * (longest - len(p)) for p in prompts], dtype=torch.long, device=self.device)  # [B, L]
        length = torch.tensor(lengths, device=self.device)
        keys = torch.arange(longest, device=self.device)
        visible = (keys[None, None, :] <= keys[None, :, None]) & (keys[None, None, :] < length[:, None, None])  # [B, L, L]: causal, not padding
        bias = torch.zeros(batch, 1, longest, longest, dtype=self.dtype, device=self.device).masked_fill_(~visible[:, None], neg)
        cache.prepare(longest)
        hidden = self._forward(tokens, keys.expand(batch, longest), bias, cache)  # [B, L, H]
        cache.commit([list(range(n)) for n in lengths])
        hidden = hidden[torch.arange(batch, device=self.device), length - 1]  # [B, H]: each row's last prompt token
        keys = [prompt_key(p) for p in prompts]
        root = self.rule.first(self._logits(hidden), keys, lengths)  # [B]: the token at position len(prompt)
        indexes = None
        if self.lookup is not None:
            indexes = [ContextIndex(self.lookup, prompt + [first]) for prompt, first in zip(prompts, root.tolist())]
        prefix = None
        if self.prefix is not None:  # its window starts at the last prompt token; each step adds at most N tokens
            prefix = self.prefix.new_cache(batch, 1 + max_new_tokens + b.num_nodes)
            hidden = self.prefix.extend(prefix, hidden[:, None], [1] * batch)  # [B, H]
        # each row's verify bias keeps 0 over its accepted prefix and gets the tree pattern over its tree slots
        tree_bias = torch.full((batch, 1, b.num_nodes, max_len), neg, dtype=self.dtype, device=self.device)
        for row, n in enumerate(lengths):
            tree_bias[row, 0, :, :n] = 0
        return DecodeState(cache=cache, tree_bias=tree_bias, hidden=hidden, root=root, rows=list(range(batch)), keys=keys,
                           emitted=[1] * batch, indexes=indexes, prefix=prefix)

    @torch.inference_mode()
    def step(self, state: DecodeState, oracles: list[list[int]] | None = None) -> list[list[int]]:
        """One verify step of every row: candidates, one forward over the tree, acceptance, K/V move. Returns each
        row's new tokens (accepted path + bonus), not yet truncated at EOS or the token limit.
        ``oracles``: one reference continuation per prompt of the batch (indexed by ``state.rows``)."""
        b, cache = self.buffers, state.cache
        if b.num_nodes > 1 and oracles is None and self.heads.config.path_dependent:
            tree_tokens = self._tree_tokens_by_depth(state)  # [B, N]
        elif b.num_nodes > 1:
            if oracles is not None:
                guesses = self._oracle_candidates([oracles[r] for r in state.rows], state.emitted)
            else:
                guesses = self._head_candidates(state.hidden, state.root)
            tree_tokens = torch.cat([state.root[:, None], guesses.flatten(1)], dim=1)[:, b.candidate_index]  # [B, N]
        else:
            tree_tokens = state.root[:, None]  # [B, 1]
        lengths = cache.lengths
        span = cache.prepare(b.num_nodes)
        for row, n in enumerate(lengths):
            state.tree_bias[row, 0, :, n : n + b.num_nodes] = b.attn_bias
        # one token per row at equal lengths attends to the whole prefix: no mask (plain decoding's fast path)
        bias = None if b.num_nodes == 1 and min(lengths) == max(lengths) else state.tree_bias[..., :span]
        positions = cache.plan.starts[:, None] + b.depths  # [B, N]
        hidden_all = self._forward(tree_tokens, positions, bias, cache)  # [B, N, H]
        nodes, bonus = self.rule.accept(tree_tokens, self._logits(hidden_all), state.keys, lengths)  # the root is at position lengths[b]
        best = torch.tensor(nodes, device=self.device)  # [B]
        state.root = torch.tensor(bonus, device=self.device)  # [B]
        paths = [self._path_of[node] for node in nodes]
        accepted = tree_tokens.gather(1, b.root_paths[best]).tolist()  # [B, D+1]: each row's path tokens, padded
        new_tokens = [accepted[row][1 : len(path)] + [bonus] for row, (path, bonus) in enumerate(zip(paths, state.root.tolist()))]
        for row, (n, path) in enumerate(zip(lengths, paths)):
            # the accepted path is now prefix; the next step's tree pattern overwrites the rest of this step's slots
            state.tree_bias[row, 0, :, n : n + len(path)] = 0
        cache.commit(paths)
        if state.prefix is None:
            state.hidden = hidden_all[torch.arange(len(paths), device=self.device), best]
        else:
            state.hidden = self._extend_prefix(state.prefix, hidden_all, paths)
        state.emitted = [e + len(t) for e, t in zip(state.emitted, new_tokens)]
        for index, tokens in zip(state.indexes or (), new_tokens):
            index.extend(tokens)
        return new_tokens

    @torch.inference_mode()
    def generate_batch(
        self,
        prompts: list[list[int]],
        max_new_tokens: int = 128,
        oracles: list[list[int]] | None = None,
        on_tokens: Callable[[int, list[int]], None] | None = None,
    ) -> list[DecodeResult]:
        """Decode up to ``max_new_tokens`` after each prompt, together, each row stopping exactly at EOS.

        ``oracles``: per prompt, the base model's own greedy continuation; replaces the heads' guesses (a ceiling).
        ``on_tokens(row, tokens)`` is called with each row's new tokens as they are emitted."""
        if self.buffers.num_nodes > 1 and self.heads is None and oracles is None:
            raise ValueError("a non-empty tree needs Medusa heads (--heads) or --oracle")
        if oracles is not None and len(oracles) != len(prompts):
            raise ValueError(f"{len(oracles)} oracle continuations for {len(prompts)} prompts")
        state = self.prefill(prompts, max_new_tokens)
        outs: list[list[int]] = [[t] for t in state.root.tolist()]
        per_step: list[list[int]] = [[1] for _ in prompts]  # tokens each row got from each forward that served it
        if on_tokens:
            for row, out in enumerate(outs):
                on_tokens(row, out[:])
        state.keep([i for i, row in enumerate(state.rows) if not self._finished(outs[row], max_new_tokens)])
        while state.rows:
            for row, tokens in zip(state.rows, self.step(state, oracles)):
                out, kept = outs[row], []
                for token in tokens:
                    kept.append(token)
                    if token in self.eos or len(out) + len(kept) >= max_new_tokens:
                        break
                out.extend(kept)
                per_step[row].append(len(kept))
                if on_tokens:
                    on_tokens(row, kept)
            state.keep([i for i, row in enumerate(state.rows) if not self._finished(outs[row], max_new_tokens)])
        return [DecodeResult(tokens=out, steps=len(counts), emitted_per_step=counts,
                             stop_reason="eos" if out[-1] in self.eos else "length")
                for out, counts in zip(outs, per_step)]

    def _finished(self, out: list[int], max_new_tokens: int) -> bool:
        return out[-1] in self.eos or len(out) >= max_new_tokens

    def generate(
        self,
        prompt_ids: list[int],
        max_new_tokens: int = 128,
        oracle: list[int] | None = None,
        on_tokens: Callable[[list[int]], None] | None = None,
    ) -> DecodeResult:
        """One prompt (a batch of one): see ``generate_batch``; ``on_tokens(tokens)`` streams its tokens."""
        stream = (lambda _row, tokens: on_tokens(tokens)) if on_tokens else None
        return self.generate_batch([prompt_ids], max_new_tokens, None if oracle is None else [oracle], stream)[0]
