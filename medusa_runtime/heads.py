"""Medusa heads: the module, and strict load/save in the upstream (FasterDecoding) checkpoint format.

A checkpoint is a folder with ``config.json`` (``medusa_num_heads``, ``medusa_num_layers``,
``base_model_name_or_path``) and ``medusa_lm_head.safetensors`` (what we write) or
``medusa_lm_head.pt`` (read with ``weights_only=True``: a pickle must never run code). The state dict
is a ModuleList: ``{i}.{j}.linear.weight|bias`` for ResBlock j of head i and, in "v1" checkpoints,
``{i}.{L}.weight`` for head i's own lm_head. "v2" checkpoints have no per-head lm_head and reuse the base
model's. Head count and depth are read from the keys (released configs are known to state them wrong).
Loading is strict: a missing, unexpected or mis-shaped tensor is an error naming the key and the file.

Optional ``draft_vocab.json`` (ours; upstream loaders ignore it): the token ids the heads may guess, e.g.
the most frequent tokens of the base model's own answers. Guessing then multiplies the heads' features by
those rows of the lm_head only (4,096 of SmolLM2's 49,152 rows: a twelfth of the memory traffic), as
FR-Spec does for draft models. Verification is untouched, so decoding stays lossless; only guesses of
tokens outside the set are lost.

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

Engines (``ENGINES``: upstream Medusa, TensorRT-LLM) run plain Medusa heads only, ranking the whole vocabulary with
the heads' own layers over the last hidden state: no draft vocabulary, no context lookup, no prefix attention.
``engine_view`` gives the same weights run that way, so calibration and bench can measure what an engine runs.
"""

from __future__ import annotations

import copy
import json
import pickle
import re
import struct
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .files import is_int, json_type, one_line, read_json_object
from .layout import frozen_linear, pack_linears, weight_version
from .lookup import CONFIG_KEY as LOOKUP_KEY
from .lookup import ContextLookup
from .prefix import CONFIG_KEY as PREFIX_KEY
from .prefix import KEY_PREFIX, PrefixAttention, PrefixConfig

WEIGHT_FILES = ("medusa_lm_head.safetensors", "medusa_lm_head.pt")
DRAFT_VOCAB_FILE = "draft_vocab.json"
DRAFT_VOCAB_FORMAT = "medusa-draft-vocab"


ENGINES = {"medusa": "upstream Medusa", "trtllm": "TensorRT-LLM"}  # engines that take exported trees, and run Medusa heads


class EngineError(ValueError):
    """Heads an engine cannot run; the message says why and what to pass instead."""


class HeadsFormatError(ValueError):
    """A heads checkpoint that does not match what it must hold; the message names the file and key."""


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


HEAD_KINDS = ("plain", "root-conditioned", "sequential")


def true_path(future: torch.Tensor) -> torch.Tensor:
    """The draft tokens a sequential head reads on the true path (teacher forcing): future [..., K] (the tokens
    heads 0..K-1 should guess, -1 where unknown) -> path [..., K-1] (head i reads path[..., :i]; -1 becomes 0,
    harmless because every later head's target is unknown there too)."""
    return future[..., :-1].clamp(min=0)


@dataclass
class HeadsConfig:
    num_heads: int
    num_layers: int
    hidden_size: int
    vocab_size: int
    shared_lm_head: bool  # True: "v2", reuse the base lm_head
    base_model: str = ""
    root_conditioned: bool = False  # heads also read the root token's input embedding (see the module docstring)
    sequential: bool = False  # heads also read the draft tokens earlier on their path (implies root_conditioned)
    context_lookup: ContextLookup | None = None  # each node's ranking starts with a token copied from its own text
    prefix_attention: PrefixConfig | None = None  # heads read a causal attention layer's output over the answer so far

    @property
    def path_dependent(self) -> bool:
        """Whether a node's guesses depend on its own path, so the runtime expands the tree depth by depth."""
        return self.sequential or self.context_lookup is not None

    def __post_init__(self):
        if self.sequential and not self.root_conditioned:
            raise ValueError("sequential heads read the root token too: set root_conditioned=True with sequential=True")

    @staticmethod
    def flags(kind: str) -> dict[str, bool]:
        """``root_conditioned`` and ``sequential`` for one of HEAD_KINDS."""
        if kind not in HEAD_KINDS:
            raise ValueError(f"head kind {kind!r}: use one of {', '.join(HEAD_KINDS)}")
        return {"root_conditioned": kind != "plain", "sequential": kind == "sequential"}

    @property
    def kind(self) -> str:
        """plain | root-conditioned | sequential: the words the CLI and READMEs use."""
        return "sequential" if self.sequential else "root-conditioned" if self.root_conditioned else "plain"


class MedusaHeads(nn.Module):
    """K heads over the base model's last hidden state; head k guesses the token k+1 steps ahead."""

    def __init__(self, config: HeadsConfig, base_lm_head: nn.Module | None = None):
        super().__init__()
        self.config = config
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
        # the base lm_head and input embedding are borrowed, not owned: never saved with the heads
        self._base_lm_head = [base_lm_head]
        self._base_embedding: list[nn.Module | None] = [None]
        # [V'] token ids the heads may guess (None: all); a buffer so .to(device) moves it, never saved in the state dict
        self.register_buffer("draft_vocab", None, persistent=False)
        self.draft_vocab_meta: dict = {}
        # inference-only linears built from the weights (``_frozen``): ("draft", id(lm_head weight)) -> the draft
        # vocabulary's rows of it; ("input", i) -> [R_i | P_i0 | ..] side by side; each with the weights' key
        self._frozen_linears: dict[tuple, tuple[tuple, nn.Linear]] = {}

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

    def _top_tokens(self, logits: torch.Tensor, topk: int) -> torch.Tensor:
        """Logits as ``guess_logits`` gives them [..., V'] -> the token ids of their top-k [..., topk], best first."""
        top = logits.topk(topk, dim=-1).indices
        return top if self.draft_vocab is None else self.draft_vocab[top]

    def candidates(self, h: torch.Tensor, topk: int, num_heads: int | None = None, root: torch.Tensor | None = None,
                   path: torch.Tensor | None = None) -> torch.Tensor:
        """The token ids each head ranks highest: h [..., H] (root: [...]; path: [..., K-1] true draft tokens for
        sequential heads) -> [..., K, topk], best first.

        Without a draft vocabulary this is ``forward(h).topk(topk)``; with one, only its tokens compete and
        the lm_head product covers only their rows."""
        self._check_topk(topk)
        return self._top_tokens(self.guess_logits(h, num_heads, root, path), topk)

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

    def path_candidates(self, i: int, h: torch.Tensor, root: torch.Tensor, path: torch.Tensor, topk: int) -> torch.Tensor:
        """Head i's top-k for several paths at once (sequential heads, one call per tree depth): h [B, 1, H], root
        [B, 1], path [B, P, i] (the draft tokens at depths 1..i of each of P nodes) -> [B, P, topk]."""
        self._check_topk(topk)
        x = self.head_input(i, h, root, path)
        x = x.expand(*path.shape[:-1], x.shape[-1])  # head 0 reads no path: [B, 1, H] -> [B, P, H]
        return self._top_tokens(self._head_logits(self.heads[i], x), topk)

    def engine_view(self, engine: str) -> "MedusaHeads":
        """These heads as ``engine`` runs them: the same weights (shared, not copied), ranking the whole vocabulary,
        with no context lookup and no prefix attention. EngineError for heads the engine cannot run at all."""
        if engine not in ENGINES:
            raise EngineError(f"--engine {engine!r}: use one of {', '.join(ENGINES)}")
        if self.config.kind != "plain":
            raise EngineError(f"{ENGINES[engine]} runs plain Medusa heads (they read the last hidden state only) and these are "
                              f"{self.config.kind} heads; pass --heads with plain heads (treeopt train-heads --kind plain), "
                              f"or leave out --engine to calibrate them as treeopt's runtime runs them")
        view = copy.copy(self)  # nn.Module state lives in dicts: give the view its own, so the original stays as it is
        view.__dict__ = {**self.__dict__, "config": replace(self.config, context_lookup=None, prefix_attention=None),
                         "_modules": {**self._modules, "prefix": None}, "_buffers": {**self._buffers, "draft_vocab": None},
                         "_parameters": dict(self._parameters), "draft_vocab_meta": {}, "_frozen_linears": {}}
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


def read_draft_vocab(path: Path) -> tuple[list[int], dict]:
    """Tokens and meta of a ``draft_vocab.json`` (its shape; ``set_draft_vocab`` checks the ids)."""
    fix = "write the heads again with 'treeopt train-heads', or delete the file to guess from the whole vocabulary"
    doc = read_json_object(path, "draft vocabulary", fix, HeadsFormatError)
    if doc.get("format") != DRAFT_VOCAB_FORMAT or doc.get("version") != 1:
        raise HeadsFormatError(f"{path}: fields 'format' and 'version' must be {DRAFT_VOCAB_FORMAT!r} and 1; {fix}")
    tokens = doc.get("tokens")
    if not isinstance(tokens, list) or not tokens or not all(is_int(t) and 0 <= t < 2**31 for t in tokens):
        raise HeadsFormatError(f"{path}: field 'tokens' must be a non-empty list of token ids (integers >= 0); {fix}")
    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise HeadsFormatError(f"{path}: field 'meta' must be an object, got a {json_type(meta)}; {fix}")
    return tokens, meta


def read_heads_config(path: Path) -> dict:
    """The declared ``config.json``: the upstream keys with their types (the counts are not trusted: see infer_config);
    ``medusa_context_lookup`` and ``medusa_prefix_attention``, when present, come back as a checked ``ContextLookup``
    and ``PrefixConfig``."""
    fix = "restore the heads' config.json (keys medusa_num_heads, medusa_num_layers, base_model_name_or_path)"
    declared = read_json_object(path, "heads config", fix, HeadsFormatError)
    for key, least in (("medusa_num_heads", 1), ("medusa_num_layers", 0)):
        if key not in declared:
            raise HeadsFormatError(f"{path}: field {key!r} is missing; {fix}")
        if not is_int(declared[key]) or declared[key] < least:
            raise HeadsFormatError(f"{path}: field {key!r} must be an integer >= {least}, got {declared[key]!r}; {fix}")
    base = declared.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        raise HeadsFormatError(f"{path}: field 'base_model_name_or_path' must be a string, got a {json_type(base)}; {fix}")
    for flag in ("medusa_root_conditioned", "medusa_sequential"):
        if not isinstance(declared.get(flag, False), bool):
            raise HeadsFormatError(f"{path}: field {flag!r} must be true or false, got {declared[flag]!r}; {fix}")
    lookup = declared.get(LOOKUP_KEY)
    if lookup is not None:
        declared[LOOKUP_KEY] = read_lookup_field(lookup, path)
    prefix = declared.get(PREFIX_KEY)
    if prefix is not None:
        declared[PREFIX_KEY] = read_prefix_field(prefix, path)
    return declared


def read_prefix_field(value, path: Path) -> PrefixConfig:
    """The ``medusa_prefix_attention`` field: an object with integer ``num_attention_heads`` and ``intermediate_size``."""
    fix = (f"write it as {json.dumps(PrefixConfig().to_config())} (the sizes the weights were trained with), or train "
           f"heads without --prefix-attention")
    if not isinstance(value, dict):
        raise HeadsFormatError(f"{path}: field {PREFIX_KEY!r} must be an object, got a {json_type(value)}; {fix}")
    known = set(PrefixConfig().to_config())
    unknown = sorted(set(value) - known)
    if unknown:
        raise HeadsFormatError(f"{path}: field {PREFIX_KEY!r} has unknown keys {unknown}; {fix}")
    for key in sorted(known):
        if key not in value or not is_int(value[key]):
            raise HeadsFormatError(f"{path}: field {PREFIX_KEY}.{key} must be an integer, got {value.get(key)!r}; {fix}")
    try:
        return PrefixConfig(**value)
    except ValueError as err:
        raise HeadsFormatError(f"{path}: field {PREFIX_KEY!r}: {err}; {fix}") from None


def read_lookup_field(value, path: Path) -> ContextLookup:
    """The ``medusa_context_lookup`` field: an object with integer ``min_match`` and ``max_match``."""
    fix = f"write it as {json.dumps(ContextLookup().to_config())} or remove it to turn the lookup off"
    if not isinstance(value, dict):
        raise HeadsFormatError(f"{path}: field {LOOKUP_KEY!r} must be an object, got a {json_type(value)}; {fix}")
    unknown = sorted(set(value) - {"min_match", "max_match"})
    if unknown:
        raise HeadsFormatError(f"{path}: field {LOOKUP_KEY!r} has unknown keys {unknown}; {fix}")
    for key in ("min_match", "max_match"):
        if key not in value or not is_int(value[key]):
            raise HeadsFormatError(f"{path}: field {LOOKUP_KEY}.{key} must be an integer, got {value.get(key)!r}; {fix}")
    try:
        return ContextLookup(min_match=value["min_match"], max_match=value["max_match"])
    except ValueError as err:
        raise HeadsFormatError(f"{path}: field {LOOKUP_KEY!r}: {err}; {fix}") from None


# What torch.load raises on truncated or corrupt files (found by fuzzing both the zip and the legacy format):
# the unpickler and the zip reader fail in many ways, and none of them must escape as a traceback.
_TORCH_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, IndexError, KeyError, TypeError,
                      AttributeError, AssertionError, OverflowError, struct.error, OSError)


def _load_weights(path: Path) -> dict:
    """The tensors of one weight file; a file that cannot be deserialised is a HeadsFormatError naming it."""
    fix = "the file is truncated or corrupt; copy or write the heads again ('treeopt train-heads')"
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise HeadsFormatError(f"{path}: cannot be read as safetensors ({one_line(err)}); {fix}") from None
    try:
        with warnings.catch_warnings():  # a corrupt pickle also warns about its "protocol": the error below says it all
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except _TORCH_LOAD_ERRORS as err:
        raise HeadsFormatError(f"{path}: cannot be read as a weights-only checkpoint ({one_line(err)}); {fix}") from None
    if not isinstance(state, dict):
        raise HeadsFormatError(f"{path}: expected a state dict, found {type(state).__name__}; {fix}")
    return state


def _read_state(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    for name in WEIGHT_FILES:
        path = folder / name
        if path.exists():
            state = _load_weights(path)
            for key, value in state.items():
                if not isinstance(key, str):
                    raise HeadsFormatError(f"{path}: key {key!r} is not a string; the file is not a Medusa heads checkpoint")
                if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                    raise HeadsFormatError(f"{path}: key {key!r} holds {_describe(value)}, not a floating-point tensor; "
                                           f"the file is not a Medusa heads checkpoint")
            return state, path
    raise HeadsFormatError(f"{folder}: no {' or '.join(WEIGHT_FILES)} found; is this a Medusa heads folder?")


def _describe(value) -> str:
    return f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"


_KEY = re.compile(r"^(\d+)\.(\d+)\.(linear\.weight|linear\.bias|weight)$")
_ROOT_KEY = re.compile(r"^root\.(\d+)\.weight$")
_PATH_KEY = re.compile(r"^path\.(\d+)\.(\d+)\.weight$")


def infer_config(state: dict[str, torch.Tensor], path: Path, prefix: PrefixConfig | None = None) -> HeadsConfig:
    """Read head count, ResBlock depth, hidden size and lm_head kind from the state dict's keys; ``prefix``: the
    prefix attention config.json declares (its weights must then be there, and only then)."""
    layout: dict[int, dict[int, set[str]]] = {}
    roots = sorted(int(m[1]) for m in map(_ROOT_KEY.match, state) if m)
    sequential = any(_PATH_KEY.match(key) for key in state)
    has_prefix = any(key.startswith(KEY_PREFIX) for key in state)
    if has_prefix and prefix is None:
        raise HeadsFormatError(f"{path}: holds prefix-attention weights ('{KEY_PREFIX}*' keys) but the heads' config.json has no "
                               f"{PREFIX_KEY!r} field with their sizes; restore the config.json written with these weights")
    if prefix is not None and not has_prefix:
        raise HeadsFormatError(f"{path}: config.json asks for prefix attention ({PREFIX_KEY!r}) but the file has no "
                               f"'{KEY_PREFIX}*' keys: the prefix-attention weights are missing; copy the heads again or remove the field")
    for key in state:
        if _ROOT_KEY.match(key) or _PATH_KEY.match(key) or key.startswith(KEY_PREFIX):
            continue
        match = _KEY.match(key)
        if not match:
            raise HeadsFormatError(f"{path}: unexpected key {key!r}; expected '{{head}}.{{layer}}.linear.weight' style keys")
        layout.setdefault(int(match[1]), {}).setdefault(int(match[2]), set()).add(match[3])
    if not layout:
        raise HeadsFormatError(f"{path}: holds no tensors")
    heads = sorted(layout)
    if heads != list(range(len(heads))):
        raise HeadsFormatError(f"{path}: head indices {heads} are not 0..{len(heads) - 1}")
    first = layout[0]
    resblocks = [j for j, kinds in first.items() if "linear.weight" in kinds]
    num_layers = len(resblocks)
    shared = num_layers not in first
    for i in heads:
        for j in range(num_layers):
            for kind in ("linear.weight", "linear.bias"):
                if kind not in layout[i].get(j, set()):
                    raise HeadsFormatError(f"{path}: missing key '{i}.{j}.{kind}' (head {i}, ResBlock {j})")
        if not shared and "weight" not in layout[i].get(num_layers, set()):
            raise HeadsFormatError(f"{path}: missing key '{i}.{num_layers}.weight' (head {i}'s lm_head)")
    if roots and roots != heads:
        raise HeadsFormatError(f"{path}: root-conditioned heads need one 'root.{{i}}.weight' per head 0..{len(heads) - 1}; found {roots}")
    if sequential and not roots:
        raise HeadsFormatError(f"{path}: sequential heads ('path.{{i}}.{{j}}.weight' keys) need 'root.{{i}}.weight' keys too; found none")
    first_key = "0.0.linear.weight" if num_layers else f"0.{num_layers}.weight"
    if state[first_key].dim() != 2:
        raise HeadsFormatError(f"{path}: key {first_key!r} has shape {tuple(state[first_key].shape)}, expected a matrix")
    hidden = state[first_key].shape[0] if num_layers else state[first_key].shape[1]
    vocab = 0 if shared else state[f"0.{num_layers}.weight"].shape[0]
    expected = _expected_shapes(len(heads), num_layers, hidden, vocab, shared, bool(roots), sequential)
    if prefix is not None:
        if hidden % prefix.num_attention_heads:
            raise HeadsFormatError(f"{path}: {PREFIX_KEY}.num_attention_heads {prefix.num_attention_heads} does not divide the "
                                   f"hidden size {hidden}; restore the config.json written with these weights")
        expected.update(prefix.shapes(hidden))
    for key, tensor in state.items():  # every key and shape before any allocation: a bad file must not size the heads
        if key not in expected:
            raise HeadsFormatError(f"{path}: unexpected key {key!r}")
        if tuple(tensor.shape) != expected[key]:
            raise HeadsFormatError(f"{path}: key {key!r} has shape {tuple(tensor.shape)}, expected {expected[key]}")
    missing = sorted(set(expected) - set(state))
    if missing:
        raise HeadsFormatError(f"{path}: missing keys {missing[:4]}" + (" (sequential heads need 'path.{i}.{j}.weight' for every 0 <= j < i)"
                                                                        if sequential else ""))
    return HeadsConfig(num_heads=len(heads), num_layers=num_layers, hidden_size=hidden, vocab_size=vocab, shared_lm_head=shared,
                       root_conditioned=bool(roots), sequential=sequential, prefix_attention=prefix)


def _expected_shapes(num_heads: int, num_layers: int, hidden: int, vocab: int, shared: bool, root: bool,
                     sequential: bool = False) -> dict[str, tuple]:
    """The keys and shapes of ``MedusaHeads(config).checkpoint_state()``, without building the heads."""
    shapes: dict[str, tuple] = {}
    for i in range(num_heads):
        for j in range(num_layers):
            shapes[f"{i}.{j}.linear.weight"], shapes[f"{i}.{j}.linear.bias"] = (hidden, hidden), (hidden,)
        if not shared:
            shapes[f"{i}.{num_layers}.weight"] = (vocab, hidden)
        if root:
            shapes[f"root.{i}.weight"] = (hidden, hidden)
        if sequential:
            shapes.update({f"path.{i}.{j}.weight": (hidden, hidden) for j in range(i)})
    return shapes


def load_heads(folder: str | Path, base_model: nn.Module | None = None) -> MedusaHeads:
    """Load heads strictly; with ``base_model``, check sizes against it and attach its lm_head."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HeadsFormatError(f"--heads {folder}: no such folder")
    state, path = _read_state(folder)
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
    expected = heads.checkpoint_state()
    for key, tensor in state.items():
        if key not in expected:
            raise HeadsFormatError(f"{path}: unexpected key {key!r}")
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise HeadsFormatError(
                f"{path}: key {key!r} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}"
            )
    heads.load_checkpoint_state(state)  # infer_config has checked that no key is missing
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
