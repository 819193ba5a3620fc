"""What ``MedusaDecoder.serve`` keeps per request and what it returns: ``per_prompt_limits`` (the token limits it is given), ``Request`` (one record per prompt: its slot,
its tokens so far, its times), ``DecodeResult`` (a request's outcome), ``ServeTimings`` (where the loop's time went
besides the verify steps) and ``ServeResults`` (the results in prompt order, with those timings).

This module decodes nothing and reads no clock; ``decoding.py`` fills these in.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def per_prompt_limits(max_new_tokens: int | list[int], count: int) -> list[int]:
    """Each of ``count`` prompts' token limit: one limit for all, or the list given (one per prompt, checked by the caller)."""
    return list(max_new_tokens) if isinstance(max_new_tokens, (list, tuple)) else [max_new_tokens] * count


@dataclass
class DecodeResult:
    tokens: list[int]  # the new tokens, EOS included when it ended the answer
    steps: int  # forward passes that produced tokens, prefill included
    emitted_per_step: list[int] = field(default_factory=list)  # tokens each of those passes produced
    stop_reason: str = "length"  # "eos" or "length"
    # with a clock (``serve``): seconds from the start of the run to the prompt's prefill, first and last token
    admitted_s: float | None = None
    first_token_s: float | None = None
    finished_s: float | None = None

    @property
    def tokens_per_step(self) -> float:
        return len(self.tokens) / max(self.steps, 1)


@dataclass
class Request:
    """One prompt of a served queue: its limit, the tokens it has been given, and (with a clock) when."""

    index: int  # its place in the queue (and in the results)
    prompt: list[int]
    limit: int  # at most this many new tokens
    tokens: list[int] = field(default_factory=list)
    per_step: list[int] = field(default_factory=list)  # tokens it kept from each forward that served it
    admitted_s: float | None = None  # seconds from the run's start to its prefill, first and last token
    first_token_s: float | None = None
    finished_s: float | None = None

    def take(self, tokens: list[int], eos: set[int]) -> list[int]:
        """Keep ``tokens`` up to and including the first EOS or the limit (mid-path if need be); returns those kept."""
        kept = []
        for token in tokens:
            kept.append(token)
            if token in eos or len(self.tokens) + len(kept) >= self.limit:
                break
        self.tokens.extend(kept)
        self.per_step.append(len(kept))
        return kept

    def finished(self, eos: set[int]) -> bool:
        return bool(self.tokens) and (self.tokens[-1] in eos or len(self.tokens) >= self.limit)

    def result(self, eos: set[int]) -> DecodeResult:
        return DecodeResult(tokens=self.tokens, steps=len(self.per_step), emitted_per_step=self.per_step,
                            stop_reason="eos" if self.tokens[-1] in eos else "length", admitted_s=self.admitted_s,
                            first_token_s=self.first_token_s, finished_s=self.finished_s)


@dataclass
class ServeTimings:
    """Seconds a ``serve`` run spent besides its verify steps (``time.perf_counter``, whatever clock serve was given)."""

    prefill_s: float = 0.0  # the prefills' forwards (a request's prompt through the model; compute, not bookkeeping)
    admission_s: float = 0.0  # admitting requests besides their forwards: slot views, per-row state assigned
    retire_s: float = 0.0  # retiring finished requests: slots freed, live rows compacted (``moves`` row copies)
    admissions: int = 0  # prefills (a prefill may admit several requests into adjacent slots)
    moves: int = 0  # rows copied into a freed slot by compaction (only when no request waited for it)

    @property
    def bookkeeping_s(self) -> float:
        """Admitting and retiring requests, their prefills' forwards excluded."""
        return self.admission_s + self.retire_s


class ServeResults(list):
    """``serve``'s results: a list of ``DecodeResult``, one per prompt in queue order, with ``timings``
    (``ServeTimings``) of the whole run."""

    def __init__(self, results: list[DecodeResult], timings: ServeTimings):
        super().__init__(results)
        self.timings = timings
