"""Which engine releases run each export: the release range of every engine treeopt exports for, and the one line
``treeopt export`` prints for a format whose engine has dropped it. Data and wording only, no checks (those are in
``formats.py`` and ``vllm.py``); docs/engines.md is the long form, with the sources.

TensorRT-LLM ran Medusa trees on its TensorRT engine backend only; its release notes of v1.3.0rc20 (2026-06-30) say
that release candidate is the last one with that backend, and PRs #15763 (examples), #15767 (docs), #15907 (Triton C++
backend) and #15918 (Python modules) removed it. Its PyTorch backend, the only one since, has no Medusa decoding
config, so a current release runs none of the TensorRT-LLM formats; a release up to v1.3.0rc20 still does.
"""

from __future__ import annotations

from dataclasses import dataclass

TRTLLM_LAST_RELEASE = "v1.3.0rc20"


@dataclass(frozen=True)
class EngineReleases:
    """The releases of one engine that run what treeopt exports for it."""

    engine: str  # the engine's name, as messages print it
    releases: str  # the release range that runs the export
    current: bool  # whether the engine's current releases still run it
    source: str  # where the range comes from (release notes, pull requests, files)


RELEASES = {
    "trtllm": EngineReleases(
        "TensorRT-LLM", f"releases up to {TRTLLM_LAST_RELEASE} (2026-06-30), on its TensorRT engine backend", current=False,
        source=f"TensorRT-LLM {TRTLLM_LAST_RELEASE} release notes ('the last one supporting the TensorRT backend'); "
               "PRs #15763, #15767, #15907, #15918 removed it"),
    "medusa": EngineReleases(
        "upstream Medusa", "FasterDecoding/Medusa at any commit (it publishes no releases)", current=True,
        source="medusa/model/medusa_choices.py, medusa/model/utils.py"),
    "vllm": EngineReleases(
        "vLLM", "releases since its V1 engine's Medusa proposer (PR #17956, merged 2025-05), current ones included",
        current=True, source="PR #17956; vllm/v1/spec_decode/medusa.py, vllm/model_executor/models/medusa.py, "
                             "vllm/transformers_utils/configs/medusa.py, vllm/config/speculative.py"),
}


def release_note(target: str | None) -> str | None:
    """One line for an export whose engine's current releases no longer run it (None for the others)."""
    releases = RELEASES.get(target) if target is not None else None
    if releases is None or releases.current:
        return None
    return (f"note: {releases.engine} runs this format only in {releases.releases}, which later releases removed "
            f"(source: {releases.source}; see docs/engines.md); the file is written all the same")
