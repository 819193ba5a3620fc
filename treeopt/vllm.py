"""vLLM's Medusa: the heads as the checkpoint its Medusa model loads, and the ``speculative_config`` that runs them.

What vLLM runs (read in its source, 2026-12; ``tests/test_consumers.py`` re-implements the loader):

* ``vllm/v1/spec_decode/medusa.py``: each head's argmax over the hidden state that produced the last sampled token,
  ``num_speculative_tokens`` heads, verified as one chain. treeopt's tree for it is the chain ``[0], [0, 0], ...``
  (``treeopt build --for vllm``: ranks < 1), ``num_speculative_tokens`` its depth; depth 0 is speculation off.
* ``vllm/transformers_utils/configs/medusa.py``: config.json with ``model_type: medusa``; any key holding "num" and
  "heads" becomes ``num_heads``, "num" and "layers" ``num_hidden_layers``; ``truncated_vocab_size`` defaults to
  ``vocab_size``. ``vllm/config/speculative.py`` sets ``num_heads`` to ``num_speculative_tokens``, so vLLM builds
  that many heads and loads the first ones of the checkpoint, silently leaving heads the checkpoint lacks unloaded:
  the export refuses a chain deeper than the folder's heads.
* ``vllm/model_executor/models/medusa.py``: ``blocks.{i}.layers.{j}.weight`` (and ``.bias`` with
  ``medusa_fc_bias``), x + SiLU(W x + b) per layer as our ResBlocks; ``lm_heads.{i}.weight`` per head, or one
  ``lm_head.weight`` for all heads with ``original_lm_head`` (our "v2" heads, which share the base lm_head). A
  ``token_map`` tensor with ``truncated_vocab_size`` < ``vocab_size`` restricts the heads to those token ids, any of
  them, in any order (rows of the lm_head are taken for them; every other token scores -inf): a draft vocabulary
  exactly, so it is exported rather than refused.

Not exported: heads other than plain ones (vLLM's blocks read the hidden state alone), context lookup (vLLM drafts
from the heads alone) and prefix attention (no place for it): ``check_runs_on_vllm`` refuses them in one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medusa_runtime.files import read_json_object, write_text_atomic
from medusa_runtime.spec import TreeSpec, TreeSpecError

if TYPE_CHECKING:  # torch and the heads load only where heads are written: 'treeopt export' starts without them
    import torch

    from medusa_runtime.heads import MedusaHeads

from .formats import ExportFormat, ExportSettings, check_export

VLLM_TARGET = "vllm"
WEIGHTS_FILE = "model.safetensors"  # vLLM's loader reads every *.safetensors of the folder
CONFIG_FILE = "config.json"


def _render(spec: TreeSpec, settings: ExportSettings) -> str:
    """Never called: ``check_export`` reads only the format's limits and consumer; ``speculative_config_text`` writes
    the text, since it names the heads folder, which ExportSettings does not carry."""
    raise NotImplementedError("use speculative_config_text")


SPECULATIVE_FORMAT = ExportFormat("vllm", "vLLM (speculative_config, method medusa)", VLLM_TARGET, _render)


def check_runs_on_vllm(heads: MedusaHeads, where: str) -> None:
    """Raise EngineError (one line) for heads vLLM's Medusa model cannot run as they were trained."""
    from medusa_runtime.heads import EngineError

    if heads.config.kind != "plain":
        raise EngineError(f"{where}: vLLM runs plain Medusa heads (they read the last hidden state only) and these are "
                          f"{heads.config.kind} heads; export plain heads (treeopt train-heads --kind plain)")
    if heads.config.context_lookup is not None:
        raise EngineError(f"{where}: these heads start each ranking with a token copied from the text (context lookup), "
                          f"which vLLM's Medusa does not do; export heads trained without it "
                          f"(treeopt train-heads --kind plain --no-context-lookup)")
    if heads.config.prefix_attention is not None:
        raise EngineError(f"{where}: these heads read a prefix-attention layer, which vLLM's Medusa model has no place "
                          f"for; export heads trained without it")


@dataclass
class VllmCheckpoint:
    """What ``export-heads --format vllm`` writes: config.json's fields and the safetensors' tensors."""

    config: dict
    tensors: dict[str, torch.Tensor]


def vllm_checkpoint(heads: MedusaHeads, base_lm_head: torch.Tensor | None, where: str) -> VllmCheckpoint:
    """``heads`` (plain) under vLLM's config fields and weight names. ``base_lm_head``: the base model's lm_head
    weight [V, H], needed by heads that share it (written once, as ``lm_head.weight`` with ``original_lm_head``).
    A draft vocabulary becomes ``token_map`` with ``truncated_vocab_size``, and only its rows of the lm_heads."""
    import torch

    from medusa_runtime.heads import EngineError

    check_runs_on_vllm(heads, where)
    config = heads.config
    state = heads.checkpoint_state()
    rows = heads.draft_vocab.cpu() if heads.draft_vocab is not None else None

    def vocab_rows(weight: torch.Tensor) -> torch.Tensor:
        return weight if rows is None else weight[rows]

    tensors: dict[str, torch.Tensor] = {}
    for i in range(config.num_heads):
        for j in range(config.num_layers):
            tensors[f"blocks.{i}.layers.{j}.weight"] = state[f"{i}.{j}.linear.weight"]
            tensors[f"blocks.{i}.layers.{j}.bias"] = state[f"{i}.{j}.linear.bias"]
        if not config.shared_lm_head:
            tensors[f"lm_heads.{i}.weight"] = vocab_rows(state[f"{i}.{config.num_layers}.weight"])
    if config.shared_lm_head:
        if base_lm_head is None:
            raise EngineError(f"{where}: these heads share the base model's lm_head; load them with the base model")
        tensors["lm_head.weight"] = vocab_rows(base_lm_head)
    if rows is not None:
        tensors["token_map"] = rows.to(torch.int64)
    fields = {
        "model_type": "medusa",
        "architectures": ["MedusaModel"],
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "num_heads": config.num_heads,
        "num_hidden_layers": config.num_layers,
        "truncated_vocab_size": config.vocab_size if rows is None else len(rows),
        "medusa_fc_bias": True,  # our ResBlocks have a bias; vLLM's have one only with this field
        "original_lm_head": config.shared_lm_head,
        "treeopt": {"base_model": config.base_model, "draft_vocab": heads.draft_vocab_meta if rows is not None else None},
    }
    return VllmCheckpoint(fields, {k: v.detach().float().contiguous().cpu() if v.is_floating_point() else v.contiguous().cpu()
                                   for k, v in tensors.items()})


def write_vllm_checkpoint(checkpoint: VllmCheckpoint, folder: Path) -> None:
    """Write config.json and model.safetensors into ``folder``; refuse a folder with other weight files, since vLLM
    would load those too (raises EngineError before writing anything)."""
    from safetensors.torch import save_file

    from medusa_runtime.heads import EngineError

    others = sorted(p.name for p in folder.glob("*") if p.suffix in (".safetensors", ".bin", ".pt") and p.name != WEIGHTS_FILE) \
        if folder.is_dir() else []
    if others:
        raise EngineError(f"{folder}: holds {', '.join(others)}; vLLM loads every weight file of its heads folder, so "
                          f"choose an empty folder for --out")
    folder.mkdir(parents=True, exist_ok=True)
    save_file(checkpoint.tensors, str(folder / WEIGHTS_FILE))
    write_text_atomic(folder / CONFIG_FILE, json.dumps(checkpoint.config, indent=1) + "\n")


@dataclass
class VllmHeadsFolder:
    """A heads folder as vLLM will read it: how many heads it has and how many tokens they rank."""

    path: Path
    num_heads: int
    truncated_vocab_size: int | None


def read_vllm_heads_folder(folder: Path) -> VllmHeadsFolder:
    """The folder ``export-heads --format vllm`` wrote, checked as far as the speculative_config depends on it."""
    fix = f"write it with 'treeopt export-heads HEADS --format vllm --out {folder}'"
    if not (folder / WEIGHTS_FILE).is_file():
        raise TreeSpecError(f"--heads-dir {folder}: no {WEIGHTS_FILE}; {fix}")
    config = read_json_object(folder / CONFIG_FILE, "vLLM Medusa config", fix, TreeSpecError)
    if config.get("model_type") != "medusa":
        raise TreeSpecError(f"{folder / CONFIG_FILE}: field 'model_type' is {config.get('model_type')!r}, not 'medusa'; {fix}")
    heads = [v for k, v in config.items() if "num" in k and "heads" in k]  # as vLLM's MedusaConfig maps them
    if len(heads) != 1 or not isinstance(heads[0], int) or isinstance(heads[0], bool) or heads[0] < 1:
        raise TreeSpecError(f"{folder / CONFIG_FILE}: field 'num_heads' must be one positive integer; {fix}")
    truncated = config.get("truncated_vocab_size")
    return VllmHeadsFolder(folder, heads[0], truncated if isinstance(truncated, int) else None)


def speculative_config(spec: TreeSpec, heads: VllmHeadsFolder, where: str) -> dict:
    """vLLM's ``speculative_config`` for ``spec``: method medusa, the heads folder (absolute), and the chain's depth as
    ``num_speculative_tokens``. TreeSpecError for a tree vLLM does not run (not a chain of rank-0 guesses, empty:
    speculation off needs no config, or deeper than the folder's heads)."""
    if not spec.paths:
        raise TreeSpecError(f"{where}: the tree has no paths, which for vLLM is speculation off: run vLLM without a "
                            f"speculative_config (or build a deeper chain: 'treeopt build STATS --for vllm --budget N')")
    if spec.depth > heads.num_heads:
        raise TreeSpecError(f"{where}: a chain of depth {spec.depth} needs {spec.depth} heads but {heads.path} has "
                            f"{heads.num_heads}; vLLM would run the missing heads unloaded; rebuild with "
                            f"'treeopt build STATS --for vllm --max-depth {heads.num_heads}'")
    check_export(spec, SPECULATIVE_FORMAT, ExportSettings(heads.num_heads, None, None), where)
    return {"method": "medusa", "model": str(heads.path.resolve()), "num_speculative_tokens": len(spec.paths)}


def speculative_config_text(spec: TreeSpec, heads: VllmHeadsFolder, where: str) -> str:
    """The JSON ``vllm serve --speculative-config`` and ``LLM(speculative_config=...)`` take, one line."""
    return json.dumps(speculative_config(spec, heads, where)) + "\n"


def export_text(spec: TreeSpec, fmt: str, heads_dir: Path | None, where: str, **options) -> str:
    """``treeopt export``'s text: ``--format vllm`` here (it takes ``heads_dir`` and none of the tree formats'
    options), every other format through ``formats.export_tree`` (which takes no ``heads_dir``)."""
    from .formats import export_tree

    if fmt != VLLM_TARGET:
        if heads_dir is not None:
            raise TreeSpecError(f"--heads-dir applies to --format vllm only (the heads folder its speculative_config "
                                f"names), not to --format {fmt}")
        return export_tree(spec, fmt, where=where, **options)
    given = [f"--{k.replace('_', '-')}" for k, v in options.items() if v is not None]
    if given:
        raise TreeSpecError(f"{', '.join(given)} does not apply to --format vllm: its depth is the tree's, its heads "
                            f"the --heads-dir folder's")
    if heads_dir is None:
        raise TreeSpecError("--format vllm writes a speculative_config naming the heads folder: pass --heads-dir DIR, "
                            "the folder 'treeopt export-heads HEADS --format vllm --out DIR' wrote")
    return speculative_config_text(spec, read_vllm_heads_folder(heads_dir), where)
