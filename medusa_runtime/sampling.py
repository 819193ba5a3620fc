"""What the user asks of token choice: greedy or sampled (temperature, top-k, top-p, seed), and the acceptance rule.

Three rules verify a tree (``acceptance.py`` runs them):

- ``greedy`` (temperature 0): keep the longest path whose tokens equal the target's argmax. Lossless.
- ``sample`` (sample-and-match, the default at temperature > 0; TensorRT-LLM's Medusa rule): the target draws its
  own token at the tree's nodes with the user's warpers and the longest path whose tokens equal those draws is kept.
  Lossless: every emitted token is a draw from the target's exact conditional given the tokens before it.
- ``typical`` (upstream Medusa's typical acceptance, only on request): a guess is kept while its probability beats
  an entropy-dependent threshold. Lossy: it changes the output distribution.

Draws are Gumbel-max with noise keyed by (``seed``, the row's prompt, the absolute position), so a seed fixes the
text: the runtime emits exactly what plain sampling with the same key emits (``draws.py``).

Two rules order the heads' guesses (the drafts; ``drafts.py`` runs them). Neither changes the text, only how much
of it a step keeps:

- ``mode``: by the heads' own logits (a node's first child is the head's most likely token). Greedy always drafts so.
- ``coupled`` (the default at temperature > 0): by ``logits / tau + G``, with ``G`` the very keyed noise the target
  draws the token of that position with and ``tau`` the head temperature (one for all heads or one per head; by
  default the sampling temperature). The top-k of that order is a sample without replacement from the head's
  distribution that lands on the target's draw far more often than the head's mode does (Gumbel coupling).

No torch here, so the CLI can check options and show defaults without importing the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

ACCEPTANCE_RULES = ("greedy", "sample", "typical")
LOSSLESS_RULES = ("greedy", "sample")
DRAFT_RULES = ("mode", "coupled")
SAMPLED_DRAFTS = "coupled"  # the draft rule at temperature > 0 unless --drafts says otherwise


class SamplingError(ValueError):
    """Sampling options that cannot be used together; the message names the option and the fix."""


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # keep the k most likely tokens (0: all), applied after the temperature, as Hugging Face does
    top_p: float = 1.0  # then keep the smallest set of most likely tokens with this much probability (1: all)
    seed: int = 0  # keys the draws: the same seed and prompt give the same text
    acceptance: str | None = None  # None: greedy at temperature 0, sample above
    keyed: bool = True  # False: fresh noise at every node and step from a generator seeded with ``seed`` (tests)
    posterior_threshold: float = 0.09  # typical acceptance: epsilon
    posterior_alpha: float = 0.3  # typical acceptance: delta
    drafts: str | None = None  # how heads order their guesses: "mode" or "coupled"; None: coupled above temperature 0
    head_temperature: tuple[float, ...] | None = None  # coupled drafts: one for all heads or one per head (None: temperature)

    def __post_init__(self) -> None:
        if not self.temperature >= 0:  # also refuses NaN
            raise SamplingError(f"--temperature {self.temperature}: must be >= 0 (0: greedy decoding)")
        if not 0 < self.top_p <= 1:
            raise SamplingError(f"--top-p {self.top_p}: must be in (0, 1] (1: no top-p filtering)")
        if self.top_k < 0:
            raise SamplingError(f"--top-k {self.top_k}: must be >= 0 (0: no top-k filtering)")
        if self.acceptance is not None and self.acceptance not in ACCEPTANCE_RULES:
            raise SamplingError(f"--acceptance {self.acceptance!r}: use one of {', '.join(ACCEPTANCE_RULES)}")
        if self.temperature == 0 and self.acceptance == "typical":
            raise SamplingError("--acceptance typical needs --temperature > 0 (at temperature 0 decoding is greedy)")
        if self.temperature > 0 and self.acceptance == "greedy":
            raise SamplingError(f"--acceptance greedy with --temperature {self.temperature}: greedy acceptance is for "
                                f"temperature 0; use --acceptance sample (lossless) at temperature > 0")
        if self.drafts is not None and self.drafts not in DRAFT_RULES:
            raise SamplingError(f"--drafts {self.drafts!r}: use one of {', '.join(DRAFT_RULES)}")
        if self.head_temperature is not None:
            object.__setattr__(self, "head_temperature", tuple(float(t) for t in self.head_temperature))
            if not self.head_temperature or not all(0 < t < float("inf") for t in self.head_temperature):
                raise SamplingError(f"--head-temperature {','.join(f'{t:g}' for t in self.head_temperature) or '(empty)'}: "
                                    f"every head temperature must be a finite number > 0 (one for all heads, or one per head)")
        if self.sampled and self.drafts == "coupled" and not self.keyed:
            raise SamplingError("coupled drafts share the target's keyed noise: use keyed draws, or --drafts mode")

    @property
    def rule(self) -> str:
        """The acceptance rule this config runs: greedy at temperature 0, else ``acceptance`` or sample-and-match."""
        if self.temperature == 0:
            return "greedy"
        return self.acceptance or "sample"

    @property
    def draft_rule(self) -> str:
        """How the heads order their guesses: ``mode`` at temperature 0, else ``drafts`` or coupled (mode under unkeyed
        noise, which has no draw of a position to couple with)."""
        if not self.sampled:
            return "mode"
        return self.drafts or (SAMPLED_DRAFTS if self.keyed else "mode")

    def head_temperatures(self, num_heads: int) -> list[float]:
        """Coupled drafts: the temperature of each of ``num_heads`` heads (SamplingError for a count that fits neither)."""
        taus = self.head_temperature or (self.temperature,)
        if len(taus) == 1:
            return list(taus) * num_heads
        if len(taus) < num_heads:
            raise SamplingError(f"--head-temperature lists {len(taus)} temperatures for {num_heads} heads: give one for all "
                                f"heads or one per head")
        return list(taus[:num_heads])

    def draft_settings(self) -> dict:
        """The draft rule as stats, trees and reports record it: {"rule": "mode"} or {"rule": "coupled",
        "head_temperature": [..] (one per head, or one for all)}."""
        if self.draft_rule == "mode":
            return {"rule": "mode"}
        return {"rule": "coupled", "head_temperature": list(self.head_temperature or (self.temperature,))}

    def with_drafts(self, drafts: dict | None) -> "SamplingConfig":
        """These settings drafting as ``drafts`` (a ``draft_settings()`` record; None or {} keeps them as they are)."""
        if not drafts:
            return self
        taus = drafts.get("head_temperature")
        return replace(self, drafts=drafts.get("rule"), head_temperature=tuple(taus) if taus else None)

    @property
    def lossless(self) -> bool:
        return self.rule in LOSSLESS_RULES

    @property
    def sampled(self) -> bool:
        return self.temperature > 0

    def ignored_options(self) -> list[str]:
        """Options given that greedy decoding does not use (worth a warning, not an error)."""
        if self.sampled:
            return []
        return [name for name, used in (("--top-k", self.top_k != 0), ("--top-p", self.top_p != 1.0),
                                        ("--drafts coupled", self.drafts == "coupled"),
                                        ("--head-temperature", self.head_temperature is not None)) if used]

    def settings(self) -> dict:
        """The settings that decide the text a prompt gets (what calibration records and trees carry)."""
        if not self.sampled:
            return {"temperature": 0.0}
        return {"temperature": float(self.temperature), "top_k": int(self.top_k), "top_p": float(self.top_p), "seed": int(self.seed)}

    def describe(self) -> str:
        return describe_settings(self.settings())

    @classmethod
    def from_settings(cls, settings: dict | None) -> "SamplingConfig":
        """The config ``settings()`` was made from (None: greedy)."""
        settings = settings or {}
        return cls(temperature=settings.get("temperature", 0.0), top_k=settings.get("top_k", 0),
                   top_p=settings.get("top_p", 1.0), seed=settings.get("seed", 0))


def describe_drafts(drafts: dict | None) -> str:
    """'mode drafts' or 'coupled drafts (head temperature 0.7)' (None: mode, what stats before the field drafted)."""
    drafts = drafts or {"rule": "mode"}
    if drafts.get("rule") != "coupled":
        return "mode drafts"
    taus = drafts.get("head_temperature") or []
    return f"coupled drafts (head temperature {','.join(f'{t:g}' for t in taus)})" if taus else "coupled drafts"


def describe_settings(settings: dict | None) -> str:
    """'greedy' or 'temperature 0.7, top-p 0.9' (what a tree or stats were calibrated for; None: greedy)."""
    settings = settings or {"temperature": 0.0}
    if not settings.get("temperature"):
        return "greedy (temperature 0)"
    parts = [f"temperature {settings['temperature']:g}"]
    if settings.get("top_k"):
        parts.append(f"top-k {settings['top_k']}")
    if settings.get("top_p", 1.0) < 1.0:
        parts.append(f"top-p {settings['top_p']:g}")
    return ", ".join(parts)


def same_distribution(a: dict | None, b: dict | None) -> bool:
    """Whether two settings sample from the same distribution (the seed does not change it)."""
    def key(s: dict | None) -> tuple:
        s = s or {"temperature": 0.0}
        if not s.get("temperature"):
            return (0.0,)
        return (float(s["temperature"]), int(s.get("top_k", 0)), float(s.get("top_p", 1.0)))

    return key(a) == key(b)


def settings_options(settings: dict | None) -> str:
    """The command-line options that reproduce these settings ('' for greedy)."""
    settings = settings or {"temperature": 0.0}
    if not settings.get("temperature"):
        return ""
    out = f"--temperature {settings['temperature']:g}"
    if settings.get("top_k"):
        out += f" --top-k {settings['top_k']}"
    if settings.get("top_p", 1.0) < 1.0:
        out += f" --top-p {settings['top_p']:g}"
    return out
