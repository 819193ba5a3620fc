"""Medusa tree decoding for one sequence (batch size 1) over a Hugging Face causal LM.

Per step: candidates from the heads' top-k (or from an oracle), one forward over the N tree tokens
with the tree attention bias and explicit positions into a preallocated static KV cache, greedy or
typical acceptance, then the accepted path's K/V moved into place. The model is driven through its
public forward (``attention_mask`` as a 4-D additive bias, ``position_ids``, a transformers
``StaticCache``); logits are ``lm_head(last_hidden_state)``, so models with logit soft-capping or
scaling are refused. This module does not load models or heads, and does not time anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers.cache_utils import Cache, StaticLayer

from .spec import TreeSpec
from .tree import TreeBuffers, build_buffers


class PrefixStaticLayer(StaticLayer):
    """A preallocated K/V buffer (``StaticLayer``'s allocation) that writes new tokens after the filled
    prefix and hands attention only that prefix, so a step attends over the tokens that exist rather
    than the whole buffer. The fill level is a Python int: no device sync per layer."""

    filled = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.filled + key_states.shape[-2]
        if end > self.max_cache_len:
            raise RuntimeError(f"KV cache overflow: {end} > {self.max_cache_len} preallocated tokens")
        self.keys[:, :, self.filled : end] = key_states
        self.values[:, :, self.filled : end] = value_states
        self.filled = end
        return self.keys[:, :, :end], self.values[:, :, :end]  # [B, kv_heads, filled, head_dim] views

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.filled + query_length, 0

    def get_seq_length(self) -> int:
        return self.filled

    def crop(self, tokens_to_remove: int) -> None:
        """``tokens_to_remove`` is negative, as for transformers' static layers."""
        self.filled = max(0, self.filled + tokens_to_remove) if tokens_to_remove < 0 else self.filled

    def reset(self) -> None:
        self.filled = 0


@dataclass
class SamplingConfig:
    """temperature 0: greedy acceptance (lossless). > 0: typical acceptance, as upstream Medusa."""

    temperature: float = 0.0
    posterior_threshold: float = 0.09  # epsilon
    posterior_alpha: float = 0.3  # delta
    seed: int = 0


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
    """What one sequence carries between steps."""

    cache: Cache  # static KV cache, [B=1, kv_heads, max_len, head_dim] per layer
    tree_bias: torch.Tensor  # [1, 1, N, max_len] additive attention bias of the verify forward
    cur: int  # tokens in the KV cache; the root goes at position cur
    hidden: torch.Tensor  # [H] last hidden state of the last accepted token (the heads read it)
    root: torch.Tensor  # [1] the next token, already emitted, not yet in the cache
    tokens: list[int]  # emitted so far


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
    """Decodes with a fixed tree. Buffers are built once here; ``generate`` runs prefill then steps."""

    def __init__(self, model, heads=None, tree: TreeSpec | None = None, eos_token_ids=(), sampling: SamplingConfig | None = None):
        _check_supported(model)
        self.model = model
        self.base = model.base_model
        self.lm_head = model.get_output_embeddings()
        self.heads = heads
        self.tree = tree or TreeSpec([])
        self.eos = set(eos_token_ids)
        self.sampling = sampling or SamplingConfig()
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        if heads is not None:
            check_tree_fits_heads(self.tree, heads, model.config.vocab_size)
        self.buffers: TreeBuffers = build_buffers(self.tree, self.device, self.dtype)
        self._depths = self.buffers.depths.tolist()
        self._root_paths = self.buffers.root_paths.tolist()
        self.vocab_size = model.config.vocab_size
        self._generator = torch.Generator(device=self.device)
        self._accept = self._accept_typical if self.sampling.temperature > 0 else self._accept_greedy

    # ------------------------------------------------------------------ cache and mask
    def _new_cache(self, max_len: int) -> Cache:
        window = getattr(self.model.config, "sliding_window", None)
        if window is not None and getattr(self.model.config, "use_sliding_window", True) and window < max_len:
            raise NotImplementedError(f"sliding-window attention (window {window}) shorter than the {max_len} tokens "
                                      f"needed is not supported; lower --max-new-tokens or the prompt length")
        return Cache(layers=[PrefixStaticLayer(max_cache_len=max_len) for _ in range(self.model.config.num_hidden_layers)])

    def _forward(self, tokens: torch.Tensor, positions: torch.Tensor, bias: torch.Tensor | None, cache: Cache) -> torch.Tensor:
        """tokens, positions: [T]; bias: [1, 1, T, cached + T] or None (attend to everything). Returns [T, H]."""
        out = self.base(input_ids=tokens[None], position_ids=positions[None], attention_mask=bias, cache=cache, use_cache=True)
        return out.last_hidden_state[0]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """lm_head over the tree tokens: hidden [N, H] -> [N, V] (on CPU a oneDNN-packed linear, layout.py)."""
        return self.lm_head(hidden)

    # ------------------------------------------------------------------ candidates
    def _head_candidates(self, hidden: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
        """hidden: [H] of the last accepted node, root: [1] the token after it -> top-k tokens [D, topk] of the
        heads the tree reads (root-conditioned heads read the root too; plain Medusa heads ignore it)."""
        return self.heads.candidates(hidden, self.buffers.topk, self.buffers.num_heads_used, root=root[0])

    def _oracle_candidates(self, reference: list[int], emitted: int) -> torch.Tensor:
        """Rank 0 of head k is the reference token k+1 steps past the root; other ranks are wrong on purpose."""
        depth, topk = self.buffers.num_heads_used, self.buffers.topk
        rows = []
        for k in range(depth):
            true = reference[emitted + k] if emitted + k < len(reference) else 0
            rows.append([(true + r) % self.vocab_size for r in range(topk)])
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    # ------------------------------------------------------------------ acceptance
    def _accept_greedy(self, tree_tokens: torch.Tensor, logits: torch.Tensor) -> tuple[int, torch.Tensor]:
        """Deepest node whose whole path equals the base argmax; returns (node, bonus token [1])."""
        b = self.buffers
        pred = logits.argmax(dim=-1)  # [N]
        ok = tree_tokens == pred[b.parents]
        ok[0] = True
        accepted = ~(b.ancestor_mask & ~ok[None, :]).any(dim=-1)  # [N]: every node on its path is right
        best = int((b.depths * accepted).argmax())  # first maximum: deterministic
        return best, pred[best : best + 1]

    def _accept_typical(self, tree_tokens: torch.Tensor, logits: torch.Tensor) -> tuple[int, torch.Tensor]:
        """Typical acceptance: p(x) > min(epsilon, delta * exp(-H)); longest path, then most likely."""
        b, s = self.buffers, self.sampling
        logp = torch.log_softmax(logits.float() / s.temperature, dim=-1)  # [N, V]
        probs = logp.exp()
        entropy = -(probs * logp).sum(-1)  # [N]
        node_logp = logp[b.parents, tree_tokens]  # [N]: log p of each node under its parent
        threshold = torch.minimum(torch.full_like(entropy, s.posterior_threshold), s.posterior_alpha * torch.exp(-entropy))
        ok = node_logp.exp() > threshold[b.parents]
        ok[0] = True
        node_logp[0] = 0.0
        accepted = ~(b.ancestor_mask & ~ok[None, :]).any(dim=-1)
        path_logp = b.ancestor_mask.float() @ node_logp  # [N]
        depth = torch.where(accepted, b.depths, -1)
        longest = accepted & (depth == depth.max())
        best = int(torch.where(longest, path_logp, float("-inf")).argmax())
        bonus = torch.multinomial(probs[best], 1, generator=self._generator)
        return best, bonus

    def _first_token(self, logits: torch.Tensor) -> torch.Tensor:
        if self.sampling.temperature > 0:
            probs = torch.softmax(logits.float() / self.sampling.temperature, dim=-1)
            return torch.multinomial(probs, 1, generator=self._generator)
        return logits.argmax(dim=-1, keepdim=True)

    # ------------------------------------------------------------------ the loop
    @torch.inference_mode()
    def prefill(self, prompt_ids: list[int], max_new_tokens: int) -> DecodeState:
        """Check sizes, allocate the cache, run the prompt, and emit the first token."""
        b = self.buffers
        n_prompt = len(prompt_ids)
        if n_prompt == 0:
            raise ValueError("the prompt is empty")
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and n_prompt + max_new_tokens > limit:
            raise PromptTooLongError(f"prompt of {n_prompt} tokens + {max_new_tokens} new tokens exceeds the model's "
                                     f"context of {limit}; shorten the prompt or lower --max-new-tokens")
        self._generator.manual_seed(self.sampling.seed)
        max_len = n_prompt + max_new_tokens + b.num_nodes
        cache = self._new_cache(max_len)
        neg = torch.finfo(self.dtype).min
        prompt = torch.tensor(prompt_ids, dtype=torch.long, device=self.device)
        bias = torch.triu(torch.full((n_prompt, n_prompt), neg, dtype=self.dtype, device=self.device), 1)[None, None]
        hidden = self._forward(prompt, torch.arange(n_prompt, device=self.device), bias, cache)[-1]  # [H]
        root = self._first_token(self._logits(hidden[None])[0])  # [1]
        # the verify bias keeps 0 over the accepted prefix and the tree pattern over the tree slots
        tree_bias = torch.full((1, 1, b.num_nodes, max_len), neg, dtype=self.dtype, device=self.device)
        tree_bias[0, 0, :, :n_prompt] = 0
        return DecodeState(cache=cache, tree_bias=tree_bias, cur=n_prompt, hidden=hidden, root=root, tokens=[int(root)])

    @torch.inference_mode()
    def step(self, state: DecodeState, oracle: list[int] | None = None) -> list[int]:
        """One verify step: candidates, one forward over the tree, acceptance, K/V move. Returns the new
        tokens (accepted path + bonus), not yet truncated at EOS or the token limit."""
        b = self.buffers
        if b.num_nodes > 1:
            guesses = self._oracle_candidates(oracle, len(state.tokens)) if oracle is not None else self._head_candidates(state.hidden, state.root)
            tree_tokens = torch.cat([state.root, guesses.flatten()])[b.candidate_index]  # [N]
        else:
            tree_tokens = state.root
        cur = state.cur
        state.tree_bias[0, 0, :, cur : cur + b.num_nodes] = b.attn_bias
        # one token attends to the whole prefix: no mask needed (the fast path plain decoding uses too)
        bias = state.tree_bias[..., : cur + b.num_nodes] if b.num_nodes > 1 else None
        hidden_all = self._forward(tree_tokens, cur + b.depths, bias, state.cache)  # [N, H]
        best, state.root = self._accept(tree_tokens, self._logits(hidden_all))
        path = self._root_paths[best][: self._depths[best] + 1]
        new_tokens = torch.cat([tree_tokens[path[1:]], state.root]).tolist()
        self._move_kv(state.cache, cur, path, b.num_nodes)
        # the accepted path is now prefix; the next step's tree pattern overwrites the rest of this step's slots
        state.tree_bias[0, 0, :, cur : cur + len(path)] = 0
        state.cur = cur + len(path)
        state.hidden = hidden_all[best]
        return new_tokens

    @torch.inference_mode()
    def generate(
        self,
        prompt_ids: list[int],
        max_new_tokens: int = 128,
        oracle: list[int] | None = None,
        on_tokens: Callable[[list[int]], None] | None = None,
    ) -> DecodeResult:
        """Decode up to ``max_new_tokens`` after ``prompt_ids``, stopping exactly at EOS.

        ``oracle``: the base model's own greedy continuation; replaces the heads' guesses (a ceiling)."""
        if self.buffers.num_nodes > 1 and self.heads is None and oracle is None:
            raise ValueError("a non-empty tree needs Medusa heads (--heads) or --oracle")
        state = self.prefill(prompt_ids, max_new_tokens)
        out = state.tokens
        emitted_per_step = [1]
        if on_tokens:
            on_tokens(out[:])
        while out[-1] not in self.eos and len(out) < max_new_tokens:
            kept = []
            for token in self.step(state, oracle):
                kept.append(token)
                if token in self.eos or len(out) + len(kept) >= max_new_tokens:
                    break
            out.extend(kept)
            emitted_per_step.append(len(kept))
            if on_tokens:
                on_tokens(kept)
        stop = "eos" if out[-1] in self.eos else "length"
        return DecodeResult(tokens=out, steps=len(emitted_per_step), emitted_per_step=emitted_per_step, stop_reason=stop)

    @staticmethod
    def _move_kv(cache: Cache, cur: int, path: list[int], num_nodes: int) -> None:
        """Copy the accepted nodes' K/V (tree slots cur+path[j]) to cur+j, then drop the rest of the tree."""
        if path != list(range(len(path))):
            src = torch.tensor(path, device=cache.layers[0].keys.device) + cur
            for layer in cache.layers:  # keys/values: [B, kv_heads, max_len, head_dim]
                layer.keys[:, :, cur : cur + len(path)] = layer.keys[:, :, src]
                layer.values[:, :, cur : cur + len(path)] = layer.values[:, :, src]
        cache.crop(-(num_nodes - len(path)))
