"""The Medusa heads checkpoint format, read strictly: what a heads folder holds and the sizes its keys imply.

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

Root-conditioned and sequential heads add ``root.{i}.weight`` and ``path.{i}.{j}.weight`` keys, prefix attention
``prefix.*`` keys, and config.json may carry ``medusa_context_lookup`` and ``medusa_prefix_attention`` (what each
does: ``heads.py``). ``read_state`` and ``infer_config`` check every key and shape before anything is allocated, so
a bad file cannot size the heads; building the module from the result is ``heads.load_heads``'s job, not this one's.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .files import is_int, json_type, one_line, read_json_object
from .lookup import CONFIG_KEY as LOOKUP_KEY
from .lookup import ContextLookup
from .prefix import CONFIG_KEY as PREFIX_KEY
from .prefix import KEY_PREFIX, PrefixConfig

WEIGHT_FILES = ("medusa_lm_head.safetensors", "medusa_lm_head.pt")
DRAFT_VOCAB_FILE = "draft_vocab.json"
DRAFT_VOCAB_FORMAT = "medusa-draft-vocab"


class HeadsFormatError(ValueError):
    """A heads checkpoint that does not match what it must hold; the message names the file and key."""


HEAD_KINDS = ("plain", "root-conditioned", "sequential")



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


def load_weights(path: Path) -> dict:
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


def read_state(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    for name in WEIGHT_FILES:
        path = folder / name
        if path.exists():
            state = load_weights(path)
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
    expected = expected_shapes(len(heads), num_layers, hidden, vocab, shared, bool(roots), sequential)
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


def expected_shapes(num_heads: int, num_layers: int, hidden: int, vocab: int, shared: bool, root: bool,
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
