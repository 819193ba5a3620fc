"""Medusa tree decoding of one or more sequences (batch size B) over a Hugging Face causal LM.

Per step, for every row of the batch: candidates from the heads' top-k (or from an oracle; heads with context
lookup put a token copied from the row's own text first, ``lookup.py``; ranked by the heads' logits, or at
temperature > 0 coupled with the target's keyed draws, ``drafts.py``), one forward over the B x N tree tokens
with explicit per-row positions into a preallocated KV cache (``kv_cache.TreeKVCache``: each row has its own length
and write position, nothing is padded on the left, and the cache makes each forward's attention bias from those
lengths), the acceptance rule per row (``acceptance.py``: greedy, sample-and-match or typical; draws keyed by the
row's prompt and position, ``draws.py``), then each row's accepted path moved into place. Rows stop independently
at EOS or their token limit and leave the batch at once, so a finished row costs nothing more. ``serve`` runs a
queue of prompts through a fixed number of slots (``batch.DecodeState``: caches allocated once for B slots): a
prompt is prefilled straight into a free slot's storage and joins the next verify step (in-flight, or continuous,
batching), a finished one frees its slot, and no other row is copied; ``generate_batch`` is the same loop with a
slot for every prompt (one static batch). ``serve`` keeps one ``served.Request`` per prompt. The model is driven through its public forward
(``attention_mask`` as a 4-D additive bias, ``position_ids``, the cache); logits are ``lm_head(last_hidden_state)``,
so models with logit soft-capping or scaling are refused. This module does not load models or heads; ``serve``
times its admissions and retirements with ``time.perf_counter`` and reads its ``clock`` only when given one.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

import torch

from .acceptance import make_rule
from .batch import DecodeState
from .draws import prompt_key
from .drafts import DraftOrder
from .kv_cache import TreeKVCache
from .layout import prepare_kernels
from .lookup import ContextIndex, merge
from .prefix import PrefixKVCache
from .served import DecodeResult, Request, ServeResults, ServeTimings, per_prompt_limits
from .sampling import SamplingConfig
from .spec import TreeSpec
from .tree import TreeBuffers, build_buffers


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
        self.drafts = None if heads is None else DraftOrder(self.sampling, heads.num_heads, heads.draft_vocab, self.device)
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
        config = self.model.config
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return TreeKVCache(config.num_hidden_layers, max_len, batch_size, kv_heads, head_dim, self.device, self.dtype)

    def _forward(self, tokens: torch.Tensor, positions: torch.Tensor, bias: torch.Tensor | None, cache: TreeKVCache) -> torch.Tensor:
        """tokens, positions: [B, T]; bias: [B, 1, T, span] or None (every row attends to everything). Returns [B, T, H]."""
        out = self.base(input_ids=tokens, position_ids=positions, attention_mask=bias, cache=cache, use_cache=True)
        return out.last_hidden_state

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """lm_head over the tree tokens: hidden [B, N, H] -> [B, N, V] (on CPU a oneDNN-packed linear, layout.py)."""
        return self.lm_head(hidden)

    # ------------------------------------------------------------------ candidates
    def _head_candidates(self, state: DecodeState) -> torch.Tensor:
        """Top-k tokens [B, D, topk] of the heads the tree reads, from each row's hidden state [B, H] at its last
        accepted node (root-conditioned heads read the root [B] too; plain Medusa heads ignore it), in the draft order."""
        b = self.buffers
        order = self.drafts.heads(self.rule.noise, state.keys, state.cache.lengths, b.num_heads_used)
        return self.heads.candidates(state.hidden, b.topk, b.num_heads_used, root=state.root, order=order)

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
                order = self.drafts.head(self.rule.noise, state.keys, state.cache.lengths, level.depth)
                ranked = self.heads.path_candidates(level.depth, h, r, path, level.topk, order)  # [B, P, topk]
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
    def new_state(self, slots: int, cache_len: int) -> DecodeState:
        """An empty batch of ``slots`` fixed slots of ``cache_len`` tokens each: its caches are allocated here, once,
        and so are the kernels' packs of every row count it can run (``layout.prepare_kernels``), so that no
        admission packs or allocates."""
        b = self.buffers
        prepare_kernels(self.model, [rows * b.num_nodes for rows in range(1, slots + 1)])  # rows come and go
        cache = self._new_cache(cache_len, slots)
        prefix = self.prefix.new_cache(slots, cache_len) if self.prefix is not None else None  # as long as the cache
        for c in (cache, prefix):
            if c is not None:
                c.truncate(0)  # no live rows yet
        hidden = torch.empty(0, self.model.config.hidden_size, device=self.device, dtype=self.dtype)
        return DecodeState(cache=cache, hidden=hidden, root=torch.empty(0, dtype=torch.long, device=self.device), rows=[],
                           keys=[], emitted=[], indexes=[] if self.lookup is not None else None, prefix=prefix)

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], max_new_tokens: int, cache_len: int | None = None,
                slots: int | None = None) -> DecodeState:
        """Check sizes, allocate a batch (``new_state``) and prefill the prompts into its first slots (``admit``).
        ``cache_len``: tokens per slot (default: what these prompts need); ``slots``: the most rows the batch will
        hold (default: these)."""
        lengths = self.check_prompts(prompts, max_new_tokens)
        state = self.new_state(max(len(prompts), slots or 0), cache_len or max(lengths) + max_new_tokens + self.buffers.num_nodes)
        self.admit(state, 0, prompts, list(range(len(prompts))))
        return state

    @torch.inference_mode()
    def admit(self, state: DecodeState, start: int, prompts: list[list[int]], requests: list[int],
              timings: ServeTimings | None = None) -> None:
        """Prefill ``prompts`` (requests ``requests`` of the queue) into slots ``start ..`` of ``state`` (free ones, or
        the first past its live rows): their keys and values are written straight into those slots' storage, their
        first tokens become the rows' roots (emitted, ``state.root``), and they join the next step. No other row is
        read or copied. ``timings``: the forward's seconds go to ``prefill_s``, the rest to ``admission_s``."""
        t0 = time.perf_counter()
        cache, prefix = state.slot_caches(start, start + len(prompts))
        t1 = time.perf_counter()
        joining = self._prefill(prompts, cache, prefix)
        joining.rows = list(requests)
        t2 = time.perf_counter()
        state.assign(start, joining)
        if timings is not None:
            timings.prefill_s += t2 - t1
            timings.admission_s += (t1 - t0) + (time.perf_counter() - t2)
            timings.admissions += 1

    def _prefill(self, prompts: list[list[int]], cache: TreeKVCache, prefix: PrefixKVCache | None) -> DecodeState:
        """Run the prompts (right-padded to the longest) through the model into ``cache`` (one live row per prompt, at
        length 0) and ``prefix``, and emit each row's first token -> their DecodeState (rows not yet set)."""
        lengths = [len(p) for p in prompts]
        batch, longest = len(prompts), max(lengths)
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
        if prefix is not None:  # its window starts at the last prompt token; each step adds at most N tokens
            hidden = self.prefix.extend(prefix, hidden[:, None], [1] * batch)  # [B, H]
        return DecodeState(cache=cache, hidden=hidden, root=root, rows=list(range(batch)), keys=keys,
                           emitted=[1] * batch, indexes=indexes, prefix=prefix)

    def check_prompts(self, prompts: list[list[int]], max_new_tokens: int) -> list[int]:
        """The prompts' lengths; ValueError for no prompts or an empty one, PromptTooLongError past the context."""
        if not prompts:
            raise ValueError("no prompts to decode")
        lengths = [len(p) for p in prompts]
        if min(lengths) == 0:
            raise ValueError(f"prompt {lengths.index(0)} is empty")
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and max(lengths) + max_new_tokens > limit:
            raise PromptTooLongError(f"prompt {lengths.index(max(lengths))} has {max(lengths)} tokens: with {max_new_tokens} "
                                     f"new tokens it exceeds the model's context of {limit}; shorten the prompt or lower "
                                     f"--max-new-tokens")
        return lengths

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
                guesses = self._head_candidates(state)
            tree_tokens = torch.cat([state.root[:, None], guesses.flatten(1)], dim=1)[:, b.candidate_index]  # [B, N]
        else:
            tree_tokens = state.root[:, None]  # [B, 1]
        lengths = cache.lengths
        cache.prepare(b.num_nodes)
        # one token per row at equal lengths attends to the whole prefix: no mask (plain decoding's fast path)
        bias = None if b.num_nodes == 1 and min(lengths) == max(lengths) else cache.attention_bias(b.attn_bias)
        positions = cache.plan.starts[:, None] + b.depths  # [B, N]
        hidden_all = self._forward(tree_tokens, positions, bias, cache)  # [B, N, H]
        nodes, bonus = self.rule.accept(tree_tokens, self._logits(hidden_all), state.keys, lengths)  # the root is at position lengths[b]
        best = torch.tensor(nodes, device=self.device)  # [B]
        state.root = torch.tensor(bonus, device=self.device)  # [B]
        paths = [self._path_of[node] for node in nodes]
        accepted = tree_tokens.gather(1, b.root_paths[best]).tolist()  # [B, D+1]: each row's path tokens, padded
        new_tokens = [accepted[row][1 : len(path)] + [bonus] for row, (path, bonus) in enumerate(zip(paths, state.root.tolist()))]
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
    def serve(
        self,
        prompts: list[list[int]],
        max_new_tokens: int | list[int] = 128,
        slots: int | None = None,
        oracles: list[list[int]] | None = None,
        on_tokens: Callable[[int, list[int]], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> ServeResults:
        """Decode every prompt through ``slots`` rows (default: one per prompt, a single static batch): prompts are
        taken in order, each prefilled into a slot as soon as one is free, and join the next verify step; each stops
        exactly at EOS or at its own ``max_new_tokens`` (one limit for all, or one per prompt) and frees its slot at
        once. Returns one DecodeResult per prompt (a ``ServeResults`` list, whose ``timings`` say how long admitting
        and retiring requests took).

        ``oracles``: per prompt, the reference continuation that replaces the heads' guesses (a ceiling).
        ``on_tokens(prompt, tokens)`` is called with each prompt's new tokens as they are emitted. ``clock``: a
        function of seconds; each result then records when its prompt was prefilled, and its first and last token."""
        limits = per_prompt_limits(max_new_tokens, len(prompts))
        slots = len(prompts) if slots is None else slots
        self._check_serve(prompts, limits, slots, oracles)
        cache_len = max(self.check_prompts(prompts, max(limits))) + max(limits) + self.buffers.num_nodes
        start = clock() if clock else 0.0
        since = (lambda: clock() - start) if clock else (lambda: None)
        requests = [Request(i, prompt, limit) for i, (prompt, limit) in enumerate(zip(prompts, limits))]
        waiting, timings = deque(requests), ServeTimings()
        self.rule.restart()  # unkeyed noise starts again at its seed: a seed fixes every call's output
        state = self.new_state(min(slots, len(prompts)), cache_len)

        def emit(request: Request, tokens: list[int]) -> None:
            kept = request.take(tokens, self.eos)
            if on_tokens:
                on_tokens(request.index, kept)
            if request.finished(self.eos):
                request.finished_s = since()  # one reading per finished prompt: the step's end

        while True:
            while waiting and state.free_slots():  # admit: prefill the next prompts into free slots
                self._admit_waiting(state, waiting, requests, timings, since, emit)
            t0 = time.perf_counter()
            timings.moves += state.compact()  # no request waits for the rows still free
            timings.retire_s += time.perf_counter() - t0
            if not state.batch_size:
                break
            for row, tokens in enumerate(self.step(state, oracles)):
                emit(requests[state.rows[row]], tokens)
            self._retire_finished(state, requests, timings)
        return ServeResults([r.result(self.eos) for r in requests], timings)

    def _admit_waiting(self, state: DecodeState, waiting: deque, requests: list[Request], timings: ServeTimings,
                       since: Callable[[], float | None], emit: Callable[[Request, list[int]], None]) -> None:
        """Prefill the next waiting prompts into the first run of adjacent free slots, emit their first tokens and
        retire those that end there."""
        free = state.free_slots()
        run = 1
        while run < min(len(free), len(waiting)) and free[run] == free[0] + run:
            run += 1
        taken = [waiting.popleft() for _ in range(run)]
        admitted = since()
        self.admit(state, free[0], [r.prompt for r in taken], [r.index for r in taken], timings)
        first = since()
        for request, token in zip(taken, state.root[free[0] : free[0] + run].tolist()):
            request.admitted_s, request.first_token_s = admitted, first
            emit(request, [token])
        self._retire_finished(state, requests, timings)

    def _retire_finished(self, state: DecodeState, requests: list[Request], timings: ServeTimings) -> None:
        """Free the slot of every live row whose request has finished (nothing is copied)."""
        t0 = time.perf_counter()
        for row, index in enumerate(state.rows):
            if row not in state.free and requests[index].finished(self.eos):
                state.retire(row)
        timings.retire_s += time.perf_counter() - t0

    def _check_serve(self, prompts: list[list[int]], limits: list[int], slots: int, oracles: list[list[int]] | None) -> None:
        if self.buffers.num_nodes > 1 and self.heads is None and oracles is None:
            raise ValueError("a non-empty tree needs Medusa heads (--heads) or --oracle")
        if oracles is not None and len(oracles) != len(prompts):
            raise ValueError(f"{len(oracles)} oracle continuations for {len(prompts)} prompts")
        if not prompts:
            raise ValueError("no prompts to decode")
        if len(limits) != len(prompts) or min(limits, default=1) < 1:
            raise ValueError(f"need one token limit >= 1 per prompt ({len(limits)} limits for {len(prompts)} prompts)")
        if slots < 1:
            raise ValueError(f"--batch-size {slots}: use an integer >= 1")

    def generate_batch(
        self,
        prompts: list[list[int]],
        max_new_tokens: int = 128,
        oracles: list[list[int]] | None = None,
        on_tokens: Callable[[int, list[int]], None] | None = None,
    ) -> list[DecodeResult]:
        """Decode up to ``max_new_tokens`` after each prompt, together (one static batch: ``serve`` with a row for every
        prompt), each row stopping exactly at EOS. ``oracles``, ``on_tokens(row, tokens)``: as for ``serve``."""
        return self.serve(prompts, max_new_tokens, None, oracles, on_tokens)

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
