"""Two heads sets of one architecture mixed weight by weight: ``(1 - weight) * A + weight * B``.

Weight-space interpolation, as WiSE-FT mixes a fine-tune with the model it started from: with A the greedy-trained
heads and B their fine-tune on text sampled at a temperature, a point between them can keep what each is good at
(docs/heads.md has the measured case). Only sets that share everything but their weights mix: the same config
(kind, sizes, context lookup, prefix attention), the same tensor names and shapes, the same draft vocabulary; the
mix is computed in float32 and stored in A's dtype. It does not train, check quality or pick the weight; measure
the mix (calibrate, build, bench) at the settings you decode with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from medusa_runtime.checkpoint import DRAFT_VOCAB_FILE, WEIGHT_FILES, read_draft_vocab, read_heads_config, read_state

TRAIN_KEY = "treeopt_train"  # our training record in config.json: the mix replaces it with its own


class MixError(ValueError):
    """Heads that cannot be mixed, or a bad weight or output folder; the message names the file and the fix."""


@dataclass
class MixedHeads:
    tensors: int
    parameters: int


def mix_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], weight: float, where: str) -> dict[str, torch.Tensor]:
    """``(1 - weight) * a + weight * b`` per tensor, in float32, stored in a's dtype; names and shapes must match."""
    if a.keys() != b.keys():
        raise MixError(f"{where}: the two sets' tensors differ ({sorted(a.keys() ^ b.keys())[:4]}); mix heads of one architecture")
    mixed = {}
    for name, wa in a.items():
        if wa.shape != b[name].shape:
            raise MixError(f"{where}: tensor {name!r} is {tuple(wa.shape)} in one set and {tuple(b[name].shape)} in the other")
        mixed[name] = ((1 - weight) * wa.float() + weight * b[name].float()).to(wa.dtype).contiguous()
    return mixed


def architecture(config: dict) -> dict:
    """The config fields that must agree for two sets to mix: everything but the training record."""
    return {k: (v.to_config() if hasattr(v, "to_config") else v) for k, v in config.items() if k != TRAIN_KEY}


def mix_heads(a: Path, b: Path, weight: float, out: Path, command: str = "", overwrite: bool = False) -> MixedHeads:
    """Write ``(1 - weight) * A + weight * B`` to ``out`` as a heads folder (A's config and draft vocabulary, a
    training record naming both sets and the weight, a README)."""
    if not 0.0 <= weight <= 1.0:
        raise MixError(f"--weight {weight}: give B's share in [0, 1] (0 writes A, 1 writes B)")
    if out.resolve() in (a.resolve(), b.resolve()):
        raise MixError(f"--out {out}: is one of the sets being mixed; write the mix to a new folder")
    existing = [out / name for name in WEIGHT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise MixError(f"{existing[0]}: heads already there; pass --overwrite or choose another --out")
    arch_a, arch_b = (architecture(read_heads_config(path / "config.json")) for path in (a, b))
    if arch_a != arch_b:
        differ = sorted(k for k in arch_a.keys() | arch_b.keys() if arch_a.get(k) != arch_b.get(k))
        raise MixError(f"{b / 'config.json'}: fields {differ} differ from {a / 'config.json'}'s; mix heads of one architecture")
    vocab_a, vocab_b = (path / DRAFT_VOCAB_FILE for path in (a, b))
    tokens = [read_draft_vocab(p)[0] if p.exists() else None for p in (vocab_a, vocab_b)]
    if tokens[0] != tokens[1]:
        raise MixError(f"{vocab_b}: the heads guess from another draft vocabulary than {vocab_a}; mix heads that share one")
    (state_a, path_a), (state_b, _) = read_state(a), read_state(b)
    mixed = mix_states(state_a, state_b, weight, f"{a} and {b}")
    out.mkdir(parents=True, exist_ok=True)
    for stale in existing:  # a .pt left beside the new file would be another set of heads in the folder
        stale.unlink()
    save_file(mixed, str(out / WEIGHT_FILES[0]))
    if vocab_a.exists():
        (out / DRAFT_VOCAB_FILE).write_bytes(vocab_a.read_bytes())
    else:  # a draft vocabulary left by heads overwritten here would narrow the mix's guesses
        (out / DRAFT_VOCAB_FILE).unlink(missing_ok=True)
    raw_a, raw_b = (json.loads((path / "config.json").read_text()) for path in (a, b))
    raw_a[TRAIN_KEY] = {"data": f"weights mixed: {1 - weight:g} x {a} + {weight:g} x {b}", "command": command,
                        "mixed_from": {str(a): raw_a.get(TRAIN_KEY), str(b): raw_b.get(TRAIN_KEY)}}
    (out / "config.json").write_text(json.dumps(raw_a, indent=1) + "\n")
    (out / "README.md").write_text(
        f"# Medusa heads mixed weight by weight\n\n`{1 - weight:g} x {a} + {weight:g} x {b}` (`treeopt mix-heads`), from "
        f"{path_a.name} files; command: `{command}`. Both sets' training records are in config.json's `{TRAIN_KEY}`. "
        f"Measure the mix with `treeopt calibrate`, `build` and `bench` at the settings you decode with.\n")
    return MixedHeads(tensors=len(mixed), parameters=sum(t.numel() for t in mixed.values()))
