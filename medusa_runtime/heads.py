"""Medusa heads: the module (plain, root-conditioned or sequential heads; prefix attention; context lookup), its engine
view, saving, and ``load_heads``, which builds it from a folder ``checkpoint.py`` has read and checked.

A draft vocabulary (``draft_vocab.json``, see ``checkpoint.py``) restricts guessing to those rows of the lm_head;
verification is untouched, so decoding stays lossless.

Root-conditioned heads (ours; ``"medusa_root_conditioned": true`` in config.json, keys ``root.{i}.weight``):
head i reads h + R_i e(root) instead of h, where e is the base model's input embedding and root the token
that follows the last accepted position (the tree's root, known before the heads run: the base model's
argmax there under greedy decoding, the sampled token under typical acceptance; training uses the
argmax). Head 1 then guesses the token after a known token rather than after a distribution over it, as
Hydra's sequentially dependent heads do for their first draft token. R_i starts at zero, so a fresh head
is a Medusa head. Upstream loaders do not read these checkpoints; plain v1/v2 heads load as before.

Sequential heads (ours; ``"medusa_sequential": true``, keys ``root.{i}.weight`` and ``path.{i}.{j}.weight`` for
0 <= j < i): head i also reads the draft tokens d_1..d_i that its own path fixed before it (d_j is the token at
depth j, guessed by head j-1), as Hydra's sequentially dependent heads do:
head i reads h + R_i e(root) + sum_j P_ij e(d_{j+1}). Each head's guesses therefore depend on the path, so the
runtime asks for them depth by depth (``path_candidates``: one call per depth over all of that depth's nodes),
and calibration and training feed the true path (teacher forcing). P_ij starts at zero, so sequential heads
initialised from root-conditioned ones guess exactly as those do.

Prefix attention (Hydra++; ``"medusa_prefix_attention": {...}`` in config.json, keys ``prefix.*``, any head kind):
the heads read z_t, the output of one small causal attention layer over the base hidden states of the answer
so far (``prefix.py``), instead of h_t. The runtime keeps that layer's own KV cache and grows it by the accepted
tokens each step; ``read_context`` gives training and calibration the same z over whole answers.

Context lookup (ours; ``"medusa_context_lookup": {"min_match": m, "max_match": M}`` in config.json, any head
kind, no keys): each node's ranking starts with the token its own text predicts by copying (``lookup.py``), so
the runtime expands such trees depth by depth too. Upstream loaders ignore the field, and a tree built for
these heads assumes it.

Engines (``ENGINES``: upstream Medusa, TensorRT-LLM, vLLM) run plain Medusa heads only, with the heads' own layers
over the last hidden state: no context lookup, no prefix attention; they rank the whole vocabulary, except vLLM,
which ranks a truncated vocabulary (its ``token_map``) when the checkpoint has one (``DRAFT_VOCAB_ENGINES``), so
that heads with a draft vocabulary keep it there. ``engine_view`` gives the same weights run that way, so
calibration and bench can measure what an engine runs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import (DRAFT_VOCAB_FILE, DRAFT_VOCAB_FORMAT, LOOKUP_KEY, PREFIX_KEY, HeadsConfig, HeadsFormatError,
                         infer_config, read_draft_vocab, read_heads_config, read_state)
from .layout import frozen_linear, pack_linears, weight_version
from .prefix import KEY_PREFIX, PrefixAttention


Order = Callable[[torch.Tensor], torch.Tensor]  # logits [..., V'] -> the scores guesses are ranked by
ENGINES = {"medusa": "upstream Medusa", "trtllm": "TensorRT-LLM", "vllm": "vLLM"}  # engines that run Medusa heads
DRAFT_VOCAB_ENGINES = frozenset({"vllm"})  # engines that run a draft vocabulary (vLLM: truncated_vocab_size + token_map)


class EngineError(ValueError):
    """Heads an engine cannot run; the message says why and what to pass instead."""


def _zero_linear(hidden: int) -> nn.Linear:
    linear = nn.Linear(hidden, hidden, bias=False)
    nn.init.zeros_(linear.weight)
    return linear


class ResBlock(nn.Module):
    """x + SiLU(W x + b), W zero-initialised so that a fresh head starts as the base lm_head."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.silu(self.linear(x))


def true_path(future: torch.Tensor) -> torch.Tensor:
    """The draft tokens a sequential head reads on the true path (teacher forcing): future [..., K] (the tokens
    heads 0..K-1 should guess, -1 where unknown) -> path [..., K-1] (head i reads path[..., :i]; -1 becomes 0,
    harmless because every later head's target is unknown there too)."""
    return future[..., :-1].clamp(min=0)


class MedusaHeads(nn.Module):
    """K heads over the base model's last hidden state; head k guesses the token k+1 steps ahead."""

    def __init__(self, config: HeadsConfig, base_lm_head: nn.Module | None = None, weights_of: "MedusaHeads | None" = None):
        """Fresh heads for ``config``; with ``weights_of``, heads that run that module's own layers (shared, not
        copied: an edit to one is an edit to both) under ``config``, which may drop context lookup and prefix
        attention but must have the same layers (``engine_view``)."""
        super().__init__()
        self.config = config
        if weights_of is None:
            self._build_layers(config)
        else:
            self._share_layers(weights_of, config)
        # the base lm_head and input embedding are borrowed, not owned: never saved with the heads
        self._base_lm_head = [base_lm_head]
        self._base_embedding: list[nn.Module | None] = [None]
        # [V'] token ids the heads may guess (None: all); a buffer so .to(device) moves it, never saved in the state dict
        self.register_buffer("draft_vocab", None, persistent=False)
        self.draft_vocab_meta: dict = {}
        # inference-only linears built from the weights (``_frozen``): ("draft", id(lm_head weight)) -> the draft
        # vocabulary's rows of it; ("input", i) -> [R_i | P_i0 | ..] side by side; each with the weights' key
        self._frozen_linears: dict[tuple, tuple[tuple, nn.Linear]] = {}

    def _build_layers(self, config: HeadsConfig) -> None:
        blocks = []
        for _ in range(config.num_heads):
            layers: list[nn.Module] = [ResBlock(config.hidden_size) for _ in range(config.num_layers)]
            if not config.shared_lm_head:
                layers.append(nn.Linear(config.hidden_size, config.vocab_size, bias=False))
            blocks.append(nn.Sequential(*layers))
        self.heads = nn.ModuleList(blocks)
        # R_i: [H, H] per head, zero so that a fresh head ignores the root; None for plain Medusa heads
        self.root_proj = nn.ModuleList(_zero_linear(config.hidden_size) for _ in range(config.num_heads)) if config.root_conditioned else None
        # P_ij: head i's projection of the draft token at depth j+1 (j < i), zero at first; None unless sequential
        self.path_proj = (nn.ModuleList(nn.ModuleList(_zero_linear(config.hidden_size) for _ in range(i))
                                        for i in range(config.num_heads)) if config.sequential else None)
        # Hydra++ prefix attention over the base hidden states (identity at first); None without it
        self.prefix = PrefixAttention(config.hidden_size, config.prefix_attention) if config.prefix_attention else None

    def _share_layers(self, source: "MedusaHeads", config: HeadsConfig) -> None:
        layers = ("num_heads", "num_layers", "hidden_size", "vocab_size", "shared_lm_head", "root_conditioned", "sequential")
        differ = [k for k in layers if getattr(config, k) != getattr(source.config, k)]
        if config.prefix_attention and config.prefix_attention != source.config.prefix_attention:
            differ.append("prefix_attention")
        if differ:
            raise ValueError(f"heads that share another's weights need its layers; the config differs in {', '.join(differ)}")
        self.heads, self.root_proj, self.path_proj = source.heads, source.root_proj, source.path_proj
        self.prefix = source.prefix if config.prefix_attention else None

    @property
    def num_heads(self) -> int:
        return self.config.num_heads

    def attach_base_lm_head(self, lm_head: nn.Module) -> None:
        self._base_lm_head = [lm_head]
        self._frozen_linears.clear()

    def attach_base(self, model: nn.Module) -> None:
        """Borrow what the heads read from the base model: its lm_head and (root-conditioned heads) its input embedding."""
        self.attach_base_lm_head(model.get_output_embeddings())
        self._base_embedding = [model.get_input_embeddings()]

    def guess_count(self, vocab_size: int) -> int:
        """How many tokens a head ranks: the draft vocabulary, or the whole vocabulary without one."""
        return vocab_size if self.draft_vocab is None else int(self.draft_vocab.numel())

    def set_draft_vocab(self, tokens: torch.Tensor | list[int] | None, meta: dict | None = None) -> None:
        """Restrict guesses to ``tokens`` (unique ids below the vocabulary size); None lifts the restriction."""
        self._frozen_linears.clear()
        if tokens is None:
            self.draft_vocab, self.draft_vocab_meta = None, {}
            return
        device = next(self.parameters()).device
        ids = torch.as_tensor(tokens, dtype=torch.long).flatten().cpu()
        if len(ids) == 0:
            raise ValueError("draft vocabulary is empty")
        if len(ids.unique()) != len(ids):
            raise ValueError("draft vocabulary lists a token twice")
        if self.config.vocab_size and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            raise ValueError(f"draft vocabulary has token ids outside 0..{self.config.vocab_size - 1} (made for another vocabulary?)")
        self.draft_vocab, self.draft_vocab_meta = ids.to(device), dict(meta or {})

    def _draft_head(self, weight: torch.Tensor) -> nn.Linear:
        """A bias-free linear over weight[draft_vocab] (one contiguous [V', H] matrix, oneDNN-packed on CPU fp32),
        built again only when the weight moves, changes dtype or is edited in place (its version counter)."""
        return self._frozen(("draft", id(weight)), [weight],
                            lambda: weight.detach()[self.draft_vocab.to(weight.device)].contiguous())  # [V', H]

    def _frozen(self, slot: tuple, weights: list[torch.Tensor], build) -> nn.Linear:
        """The cached inference linear of ``slot``, over the matrix ``build()`` makes from ``weights``; built again
        when one of them moves, changes dtype or is edited in place (its version counter)."""
        key = tuple((w.data_ptr(), w.dtype, w.device, weight_version(w)) for w in weights)
        cached = self._frozen_linears.get(slot)
        if cached is None or cached[0] != key:
            self._frozen_linears[slot] = cached = (key, frozen_linear(build()))
        return cached[1]

    def init_from_base(self, lm_head: nn.Module) -> None:
        """Initialise own lm_heads (v1) from the base lm_head, as upstream does."""
        self.attach_base_lm_head(lm_head)
        if not self.config.shared_lm_head:
            with torch.no_grad():  # an in-place copy that bumps the version, so packed copies follow
                for head in self.heads:
                    head[-1].weight.copy_(lm_head.weight)

    def read_context(self, hidden: torch.Tensor) -> torch.Tensor:
        """What the heads read at every position of whole answers: hidden [B, T, H], the base model's hidden states
        from the last prompt token on (right-padded) -> [B, T, H]: the prefix layer's output, or hidden itself for
        heads without prefix attention. The runtime gets the same one row at a time (``prefix.extend``)."""
        return hidden if self.prefix is None else self.prefix(hidden)

    def _embed(self, tokens: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The base input embedding of token ids: [...] -> [..., H]."""
        embedding = self._base_embedding[0]
        if embedding is None:
            raise RuntimeError(f"{self.config.kind} heads need the base input embedding: call attach_base(model)")
        return embedding(tokens).to(dtype)

    def head_input(self, i: int, h: torch.Tensor, root: torch.Tensor | None, path: torch.Tensor | None) -> torch.Tensor:
        """What head i reads: h [..., H] plus, for root-conditioned heads, R_i e(root) (root [...]) and, for sequential
        heads, sum_j P_ij e(path[..., j]) over the first i draft tokens of path [..., >=i]. Shapes broadcast, so
        h [B, 1, H] with path [B, P, i] gives [B, P, H]. The projections run as one matmul over the tokens'
        embeddings side by side (``_input_projection``)."""
        if self.root_proj is None:
            return h
        if root is None:
            raise ValueError(f"{self.config.kind} heads need the root token: pass root= (the base model's next token)")
        tokens = root[..., None]  # [..., 1]
        if self.path_proj is not None and i > 0:
            if path is None or path.shape[-1] < i:
                raise ValueError(f"sequential head {i} reads the {i} draft tokens before it on its path: pass path= [..., >={i}] token ids")
            lead = torch.broadcast_shapes(root.shape, path.shape[:-1])
            tokens = torch.cat([tokens.expand(*lead, 1), path[..., :i].expand(*lead, i)], dim=-1)  # [..., i+1]
        e = self._embed(tokens, h.dtype).flatten(-2)  # [..., (i+1) H]: e(root), e(d_1), .., e(d_i)
        return h + self._input_projection(i, e)

    def _input_weights(self, i: int) -> list[torch.Tensor]:
        """R_i, then P_i0..P_i,i-1 for sequential heads: each [H, H]."""
        return [self.root_proj[i].weight, *(proj.weight for proj in (self.path_proj[i] if self.path_proj is not None else ()))]

    def _input_projection(self, i: int, e: torch.Tensor) -> torch.Tensor:
        """[R_i | P_i0 | .. | P_i,i-1] e for e [..., (i+1) H] -> [..., H]. With gradients (training) the weights are
        put side by side on every call; without, once, in one cached linear (oneDNN-packed on CPU fp32) that is built
        again when a weight moves, changes dtype or is edited in place: one matmul instead of i+1 small ones."""
        weights = self._input_weights(i)
        if torch.is_grad_enabled() and any(w.requires_grad for w in weights):
            return F.linear(e, torch.cat(weights, dim=1))
        return self._frozen(("input", i), weights, lambda: torch.cat([w.detach() for w in weights], dim=1))(e)  # [H, (i+1) H]

    def _inputs(self, h: torch.Tensor, root: torch.Tensor | None, num_heads: int | None, path: torch.Tensor | None = None) -> list[torch.Tensor]:
        """What each of the first ``num_heads`` heads reads (see ``head_input``) -> tensors [..., H]."""
        count = len(self.heads) if num_heads is None else min(num_heads, len(self.heads))
        return [self.head_input(i, h, root, path) for i in range(count)]

    def _shared_lm_head(self) -> nn.Module:
        lm_head = self._base_lm_head[0]
        if lm_head is None:
            raise RuntimeError("v2 heads need the base lm_head: call attach_base(model)")
        return lm_head

    def hidden(self, h: torch.Tensor, num_heads: int | None = None, root: torch.Tensor | None = None,
               path: torch.Tensor | None = None) -> torch.Tensor:
        """Each head's own layers on what it reads. h: [..., H] (root: [...]; path: [..., K-1], the true draft
        tokens d_1.. for sequential heads, i.e. teacher forcing) -> [..., K, H], the features before the shared
        lm_head (v1 heads end in their own lm_head, so for them this is already [..., K, V] logits)."""
        return torch.stack([head(x) for head, x in zip(self.heads, self._inputs(h, root, num_heads, path))], dim=-2)

    def forward(self, h: torch.Tensor, num_heads: int | None = None, root: torch.Tensor | None = None,
                path: torch.Tensor | None = None) -> torch.Tensor:
        """h: [..., H] (root: [...], path: [..., K-1]) -> logits [..., K, V]; ``num_heads`` computes only the first
        heads (a shallow tree)."""
        out = self.hidden(h, num_heads, root, path)
        return self._shared_lm_head()(out) if self.config.shared_lm_head else out  # shared: one matmul for all heads

    def _check_topk(self, topk: int) -> None:
        if self.draft_vocab is not None and topk > len(self.draft_vocab):
            raise ValueError(f"top-{topk} candidates requested but the draft vocabulary has {len(self.draft_vocab)} tokens; "
                             f"use a tree with smaller ranks or heads written with a larger --draft-vocab")

    def _head_logits(self, head: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """One head's logits on inputs x [..., H] -> [..., V'] over the draft vocabulary when one is set (only its rows
        of the lm_head are multiplied), else [..., V]."""
        if self.config.shared_lm_head:
            features, weight = head(x), self._shared_lm_head().weight
        else:
            features, weight = head[:-1](x), head[-1].weight
        return F.linear(features, weight) if self.draft_vocab is None else self._draft_head(weight)(features)

    def top_tokens(self, logits: torch.Tensor, topk: int, order: Order | None = None) -> torch.Tensor:
        """Logits as ``guess_logits`` gives them [..., V'] -> the token ids of their top-k [..., topk], best first;
        ``order`` ranks by ``order(logits)`` instead of the logits (coupled drafts, ``drafts.py``)."""
        top = (logits if order is None else order(logits)).topk(topk, dim=-1).indices
        return top if self.draft_vocab is None else self.draft_vocab[top]

    def candidates(self, h: torch.Tensor, topk: int, num_heads: int | None = None, root: torch.Tensor | None = None,
                   path: torch.Tensor | None = None, order: Order | None = None) -> torch.Tensor:
        """The token ids each head ranks highest: h [..., H] (root: [...]; path: [..., K-1] true draft tokens for
        sequential heads) -> [..., K, topk], best first; ``order`` maps the logits [..., K, V'] to the scores
        ranked instead (coupled drafts).

        Without a draft vocabulary this is ``forward(h).topk(topk)``; with one, only its tokens compete and
        the lm_head product covers only their rows."""
        self._check_topk(topk)
        return self.top_tokens(self.guess_logits(h, num_heads, root, path), topk, order)

    def guess_logits(self, h: torch.Tensor, num_heads: int | None = None, root: torch.Tensor | None = None,
                     path: torch.Tensor | None = None) -> torch.Tensor:
        """The logits each head ranks its guesses by: h [..., H] (root, path as for ``candidates``) -> [..., K, V'],
        column i for token ``draft_vocab[i]`` when a draft vocabulary is set (only its rows of the lm_head are
        multiplied), else ``forward``'s [..., K, V] over the whole vocabulary."""
        if self.draft_vocab is None:
            return self(h, num_heads, root, path)
        if self.config.shared_lm_head:
            return self._draft_head(self._shared_lm_head().weight)(self.hidden(h, num_heads, root, path))
        return torch.stack([self._head_logits(head, x) for head, x in zip(self.heads, self._inputs(h, root, num_heads, path))], dim=-2)

    def path_candidates(self, i: int, h: torch.Tensor, root: torch.Tensor, path: torch.Tensor, topk: int,
                        order: Order | None = None) -> torch.Tensor:
        """Head i's top-k for several paths at once (sequential heads, one call per tree depth): h [B, 1, H], root
        [B, 1], path [B, P, i] (the draft tokens at depths 1..i of each of P nodes) -> [B, P, topk]; ``order`` as for
        ``candidates``, on logits [B, P, V']."""
        self._check_topk(topk)
        x = self.head_input(i, h, root, path)
        x = x.expand(*path.shape[:-1], x.shape[-1])  # head 0 reads no path: [B, 1, H] -> [B, P, H]
        return self.top_tokens(self._head_logits(self.heads[i], x), topk, order)

    def engine_view(self, engine: str) -> "MedusaHeads":
        """These heads as ``engine`` runs them: the same weights (shared, not copied), with no context lookup and no
        prefix attention, ranking the whole vocabulary (the draft vocabulary kept for ``DRAFT_VOCAB_ENGINES``).
        EngineError for heads the engine cannot run at all."""
        if engine not in ENGINES:
            raise EngineError(f"--engine {engine!r}: use one of {', '.join(ENGINES)}")
        if self.config.kind != "plain":
            raise EngineError(f"{ENGINES[engine]} runs plain Medusa heads (they read the last hidden state only) and these are "
                              f"{self.config.kind} heads; pass --heads with plain heads (treeopt train-heads --kind plain), "
                              f"or leave out --engine to calibrate them as treeopt's runtime runs them")
        view = MedusaHeads(replace(self.config, context_lookup=None, prefix_attention=None), weights_of=self)
        view.attach_base_lm_head(self._base_lm_head[0])
        view._base_embedding = list(self._base_embedding)
        view.train(self.training)
        if engine in DRAFT_VOCAB_ENGINES and self.draft_vocab is not None:
            view.set_draft_vocab(self.draft_vocab, self.draft_vocab_meta)
        return view

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The checkpoint's tensors: upstream keys ``{i}.{j}...``, plus ``root.{i}.weight`` (root-conditioned and
        sequential heads), ``path.{i}.{j}.weight`` (sequential heads) and ``prefix.*`` (prefix attention)."""
        state = dict(self.heads.state_dict())
        for name, module in self._extensions():
            if module is not None:
                state.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        return state

    def _extensions(self) -> list[tuple[str, nn.Module | None]]:
        """Our modules beside the upstream heads, by the key prefix they have in a checkpoint."""
        return [("root", self.root_proj), ("path", self.path_proj), (KEY_PREFIX[:-1], self.prefix)]

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of ``checkpoint_state`` (strict)."""
        extensions = self._extensions()
        tags = tuple(f"{name}." for name, _ in extensions)
        self.heads.load_state_dict({k: v for k, v in state.items() if not k.startswith(tags)}, strict=True)
        for name, module in extensions:
            keys = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(f"{name}.")}
            if keys and module is None:
                raise KeyError(f"unexpected {name} keys {sorted(keys)[:3]} for {self.config.kind} heads")
            if module is not None:
                module.load_state_dict(keys, strict=True)

    def save(self, folder: str | Path, extra_config: dict | None = None, weight_dtype: torch.dtype | None = None) -> None:
        """Write the checkpoint; ``weight_dtype`` (e.g. float16) stores the tensors in that dtype, and loading casts
        them back to the model's."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(weight_dtype or v.dtype).contiguous().cpu() for k, v in self.checkpoint_state().items()}
        save_file(state, str(folder / "medusa_lm_head.safetensors"))
        config = {
            "medusa_num_heads": self.config.num_heads,
            "medusa_num_layers": self.config.num_layers,
            "base_model_name_or_path": self.config.base_model,
            "hidden_size": self.config.hidden_size,
            "vocab_size": self.config.vocab_size,
            "medusa_shared_lm_head": self.config.shared_lm_head,
            **({"medusa_root_conditioned": True} if self.config.root_conditioned else {}),
            **({"medusa_sequential": True} if self.config.sequential else {}),
            **({LOOKUP_KEY: self.config.context_lookup.to_config()} if self.config.context_lookup else {}),
            **({PREFIX_KEY: self.config.prefix_attention.to_config()} if self.config.prefix_attention else {}),
            **(extra_config or {}),
        }
        (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
        draft = folder / DRAFT_VOCAB_FILE
        if self.draft_vocab is not None:
            doc = {"format": DRAFT_VOCAB_FORMAT, "version": 1, "tokens": self.draft_vocab.cpu().tolist(), "meta": self.draft_vocab_meta}
            draft.write_text(json.dumps(doc) + "\n", encoding="utf-8")
        elif draft.exists():
            draft.unlink()  # a stale file would restrict heads it was not made for


def load_heads(folder: str | Path, base_model: nn.Module | None = None) -> MedusaHeads:
    """Load heads strictly; with ``base_model``, check sizes against it and attach its lm_head."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HeadsFormatError(f"--heads {folder}: no such folder")
    state, path = read_state(folder)
    config_file = folder / "config.json"
    declared = read_heads_config(config_file) if config_file.exists() else {}
    config = infer_config(state, path, declared.get(PREFIX_KEY))
    if config_file.exists():
        config.base_model = declared.get("base_model_name_or_path", "") or ""
        config.context_lookup = declared.get(LOOKUP_KEY)
        for flag, has, keys in (("medusa_root_conditioned", config.root_conditioned, "root.{i}.weight"),
                                ("medusa_sequential", config.sequential, "path.{i}.{j}.weight")):
            if bool(declared.get(flag, False)) != has:
                raise HeadsFormatError(f"{config_file}: {flag!r} is {declared.get(flag, False)} but {path.name} "
                                       f"{'has' if has else 'has no'} '{keys}' keys; the two files are from different heads")
    if base_model is not None:
        base_hidden = base_model.config.hidden_size
        if config.hidden_size != base_hidden:
            raise HeadsFormatError(
                f"{path}: heads have hidden size {config.hidden_size} but the base model has {base_hidden}; "
                f"these heads belong to another model ({config.base_model or 'unknown'})"
            )
        if config.shared_lm_head:
            config.vocab_size = base_model.config.vocab_size
        elif config.vocab_size != base_model.config.vocab_size:
            raise HeadsFormatError(
                f"{path}: heads' lm_head has vocab {config.vocab_size}, base model has {base_model.config.vocab_size}"
            )
    heads = MedusaHeads(config)
    heads.load_checkpoint_state(state)  # infer_config has checked every key and shape
    draft = folder / DRAFT_VOCAB_FILE
    if draft.exists():
        try:
            heads.set_draft_vocab(*read_draft_vocab(draft))
        except ValueError as err:  # duplicates or ids outside the vocabulary
            raise HeadsFormatError(f"{draft}: field 'tokens': {err}") from None
    if base_model is not None:
        param = next(base_model.parameters())
        heads.to(device=param.device, dtype=param.dtype)
        for head in heads.heads:  # the ResBlocks only: a v1 head's own lm_head would be a second 100 MB-scale copy
            for block in head[: config.num_layers]:
                pack_linears(block)  # decoding feeds the heads one row: see layout.py
        if heads.prefix is not None:
            pack_linears(heads.prefix)  # a few accepted rows per step
        heads.attach_base(base_model)
    heads.eval()
    heads.requires_grad_(False)
    return heads
