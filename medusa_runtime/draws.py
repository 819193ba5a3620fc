"""The target model's own token choice: warpers as Hugging Face applies them, and Gumbel-max draws with keyed noise.

A sampled token is ``argmax(warp(logits) + G)`` with ``G`` standard Gumbel noise over the vocabulary: a draw from
``softmax(warp(logits))``. The noise of a row at absolute position t (the token's index in prompt + answer) is keyed
by (seed, the row's prompt token ids, t): the same key gives the same noise in the runtime (at every tree node of
that position), in a plain sampler (``KeyedSampler``, a Hugging Face logits processor) and in calibration, so a
seed fixes the text whatever the tree, the batch or the row. ``FreshNoise`` draws independent noise at every call
instead (unkeyed sampling, for tests that count frequencies).

``warp`` applies temperature, then top-k, then top-p, in the order and with the semantics of Hugging Face's
``TemperatureLogitsWarper``, ``TopKLogitsWarper`` and ``TopPLogitsWarper`` (a test holds them equal); top-p looks at
the top 64 tokens first and widens only for rows whose top tokens hold less mass than ``top_p``, instead of sorting
the whole vocabulary at every draw.

This module decides no acceptance (``acceptance.py``) and loads nothing.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch
from transformers import LogitsProcessor

from .sampling import SamplingConfig

TOP_P_FIRST = 64  # tokens top-p looks at before widening


def warp(logits: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """logits [..., V] -> float32 [..., V]: divided by the temperature, tokens outside top-k / top-p at -inf."""
    x = logits.float() / sampling.temperature
    if sampling.top_k:
        kth = x.topk(min(sampling.top_k, x.shape[-1]), dim=-1).values[..., -1:]  # [..., 1]
        x = x.masked_fill(x < kth, float("-inf"))
    if sampling.top_p < 1.0:
        x = _top_p(x, sampling.top_p)
    return x


def _top_p(x: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep each token whose more likely tokens hold less than ``top_p`` of the mass (the most likely always):
    Hugging Face's rule (remove where the ascending cumulative mass is <= 1 - top_p) read from the top."""
    shape = x.shape
    flat = x.reshape(-1, shape[-1])  # [R, V]
    probs = flat.softmax(dim=-1)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    rows = torch.arange(flat.shape[0], device=x.device)
    k = TOP_P_FIRST
    while len(rows):
        k = min(k, shape[-1])
        top, index = probs[rows].topk(k, dim=-1)  # [r, k] descending
        above = top.cumsum(dim=-1) - top  # mass of the tokens ranked before each
        kept = above < top_p
        kept[:, 0] = True
        settled = (top.sum(dim=-1) >= top_p) | (k == shape[-1])  # every token past k has at least that much above it
        done = rows[settled]
        keep[done] = keep[done].scatter(1, index[settled], kept[settled])
        rows = rows[~settled]
        k *= 8
    return flat.masked_fill(~keep, float("-inf")).reshape(shape)


def prompt_key(prompt_ids: list[int]) -> int:
    """A 63-bit key of a prompt's token ids (the same prompt gets the same key in any batch or row)."""
    digest = hashlib.blake2b(" ".join(map(str, prompt_ids)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _position_seed(seed: int, key: int, position: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{key}:{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def keyed_gumbel(seed: int, key: int, position: int, vocab: int) -> torch.Tensor:
    """Standard Gumbel noise [V] (float32, on the CPU) for this key and absolute position: the same on every device."""
    generator = torch.Generator().manual_seed(_position_seed(seed, key, position))
    uniform = torch.rand(vocab, generator=generator, dtype=torch.float64).numpy()  # [0, 1): 0 gives -inf, never drawn
    # numpy's log, bit for bit what torch.log gives here, but single-threaded: torch's intra-op threads cost 5-100x
    # on a [V] vector when the cores are busy (measured on the 2-core VMs)
    with np.errstate(divide="ignore"):
        return torch.from_numpy((-np.log(-np.log(uniform))).astype(np.float32))


class KeyedNoise:
    """Noise keyed by (seed, prompt key, position). Coupled drafts read a position's noise before the target draws
    there, and the next step's drafts read it again, so the last ``MEMO`` (key, position) rows drawn are kept: each
    is computed once however often a step reads it."""

    MEMO = 512  # rows kept (each [V] float32 on the device: 100 MB at V = 49152)

    def __init__(self, seed: int, vocab: int, device: torch.device):
        self.seed, self.vocab, self.device = seed, vocab, device
        self._memo: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()

    def gumbel(self, keys: list[int], positions: list[int], columns: torch.Tensor | None = None) -> torch.Tensor:
        """keys, positions: one per row -> [rows, V] on the device; ``columns`` [V'] (coupled drafts' draft
        vocabulary): only those columns of each row -> [rows, V']."""
        rows = (self._row(key, position) for key, position in zip(keys, positions))
        return torch.stack(list(rows) if columns is None else [row[columns] for row in rows])

    def _row(self, key: int, position: int) -> torch.Tensor:
        row = self._memo.get((key, position))
        if row is None:
            row = self._memo[(key, position)] = keyed_gumbel(self.seed, key, position, self.vocab).to(self.device)
            if len(self._memo) > self.MEMO:
                self._memo.popitem(last=False)
        else:
            self._memo.move_to_end((key, position))
        return row


class FreshNoise:
    """Independent noise at every call (unkeyed sampling), from one generator seeded once."""

    def __init__(self, seed: int, vocab: int, device: torch.device):
        self.vocab, self.device = vocab, device
        self.generator = torch.Generator().manual_seed(seed)

    def gumbel(self, keys: list[int], positions: list[int]) -> torch.Tensor:
        uniform = torch.rand(len(keys), self.vocab, generator=self.generator, dtype=torch.float64)
        return (-torch.log(-torch.log(uniform))).float().to(self.device)


def make_noise(sampling: SamplingConfig, vocab: int, device: torch.device) -> KeyedNoise | FreshNoise:
    return (KeyedNoise if sampling.keyed else FreshNoise)(sampling.seed, vocab, device)


def draw(logits: torch.Tensor, sampling: SamplingConfig, noise, keys: list[int], positions: list[int]) -> torch.Tensor:
    """The target's token for each row: logits [R, V], one key and absolute position per row -> [R]. Greedy
    (temperature 0): the argmax, no noise."""
    if not sampling.sampled:
        return logits.argmax(dim=-1)
    return (warp(logits, sampling) + noise.gumbel(keys, positions)).argmax(dim=-1)


class KeyedSampler(LogitsProcessor):
    """A Hugging Face logits processor: plain sampling with the runtime's keyed draws. Pass it to ``generate`` with
    ``do_sample=False`` (it warps and adds the noise; the argmax then is the draw). ``prompts`` are the rows' prompts,
    left-padded to ``width`` columns in ``input_ids``."""

    def __init__(self, sampling: SamplingConfig, prompts: list[list[int]], width: int):
        if not sampling.sampled:
            raise ValueError("KeyedSampler needs a temperature > 0")
        self.sampling, self.width = sampling, width
        self.keys = [prompt_key(p) for p in prompts]
        self.lengths = [len(p) for p in prompts]
        self.noise: KeyedNoise | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """input_ids [B, L], scores [B, V] -> warped scores plus each row's noise at its next position."""
        if self.noise is None:
            self.noise = KeyedNoise(self.sampling.seed, scores.shape[-1], scores.device)
        generated = input_ids.shape[1] - self.width
        positions = [n + generated for n in self.lengths]
        return warp(scores, self.sampling) + self.noise.gumbel(self.keys, positions)
