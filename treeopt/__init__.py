"""treeopt: calibrate Medusa heads, build the speculation tree that is fastest on your device, export it, run it.

The four steps from Python, the same functions the command line calls (docs/api.md has a worked example):

- load: ``load_model`` (a ``LoadedModel``), ``load_heads`` (``MedusaHeads``), ``select_prompts`` + ``render_chat``;
- calibrate: ``calibrate(loaded, heads, prompt_ids, ...) -> CalibrationStats`` (``stats_provenance`` records where
  they came from; ``load_stats`` reads a saved file);
- build: ``build(stats, budget) -> TreeSpec``, or ``choose_tree(stats, TreeRequest(...), latency, Serving(...))``
  for the whole result, the one tree choice the command line makes (``profile_latency`` + ``load_latency_batches``
  for ``budget=None``: the size with the best predicted tokens/s at that batch size and batching);
- export: ``export_tree(spec, "trtllm-llmapi") -> str``;
- run and measure: ``MedusaDecoder(model, heads, spec, eos, SamplingConfig(...)).generate(...)``, and
  ``run_bench(loaded, heads, spec, prompt_ids, ...) -> BenchReport`` against Hugging Face ``generate``.

Names load lazily (PEP 562), so ``import treeopt`` does not import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "load_model": "medusa_runtime.models", "LoadedModel": "medusa_runtime.models",
    "load_heads": "medusa_runtime.heads", "MedusaHeads": "medusa_runtime.heads",
    "select_prompts": "medusa_runtime.prompts", "render_chat": "medusa_runtime.prompts",
    "calibrate": "treeopt.calibration", "stats_provenance": "treeopt.calibration",
    "CalibrationStats": "treeopt.stats", "load_stats": "treeopt.stats",
    "build": "treeopt.design", "design_tree": "treeopt.design", "TreeRequest": "treeopt.design",
    "choose_tree": "treeopt.choice", "TreeChoice": "treeopt.choice", "Serving": "treeopt.choice",
    "profile_latency": "treeopt.profile", "load_latency": "treeopt.tuning", "load_latency_batches": "treeopt.tuning",
    "export_tree": "treeopt.formats",
    "TreeSpec": "medusa_runtime.spec", "load_tree": "medusa_runtime.spec",
    "MedusaDecoder": "medusa_runtime.decoding", "SamplingConfig": "medusa_runtime.sampling",
    "run_bench": "medusa_runtime.bench", "BenchReport": "medusa_runtime.bench",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'treeopt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
