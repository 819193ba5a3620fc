"""How the runtime picks tokens: greedy (lossless) or typical acceptance, and the one place its defaults live.

No torch here, so the CLI can show these defaults without importing the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SamplingConfig:
    """temperature 0: greedy acceptance (lossless). > 0: typical acceptance, as upstream Medusa."""

    temperature: float = 0.0
    posterior_threshold: float = 0.09  # epsilon
    posterior_alpha: float = 0.3  # delta
    seed: int = 0
