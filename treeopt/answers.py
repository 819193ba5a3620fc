"""Self-distilled answers packed as compact token ids, so that heads can be retrained without regenerating them.

Writing the base model's greedy answers is the slow part of ``train-heads`` on a CPU (hours for a million
tokens), so the answers the shipped heads were trained on ship with the repository: one ``.npz`` (numpy,
compressed) holding every prompt and answer as token ids back to back (``tokens``: uint16 when the vocabulary
fits, else uint32), their lengths (``prompt_lengths``, ``answer_lengths``: uint32) and a JSON ``meta`` string
(format, version, the model, the dtype that wrote the answers, the answer length limit, the generation order).

``train-heads`` seeds its resumable answer file from such a pack (``seed_answers``): answers already there are
kept, the pack's are appended, and generation goes on from the first prompt still unanswered. This module does
not generate or train anything.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .distill import Trajectory, drop_partial_tail, read_trajectories

ANSWERS_FORMAT = "treeopt-answers"
# the shipped pack per model alias: what the shipped heads trained on (bfloat16 answers of at most 128 tokens)
SHIPPED = {"smollm2-135m": Path(__file__).resolve().parent.parent / "data" / "answers" / "smollm2-135m.npz"}
SHIPPED_SETTINGS = {"gen_dtype": "bfloat16", "max_new_tokens": 128}
ANSWERS_VERSION = 1


class AnswersError(ValueError):
    """An answers pack that cannot be read or does not fit the run; the message names the file and the fix."""


@dataclass
class AnswerPack:
    trajectories: list[Trajectory]
    meta: dict  # format, version, model, gen_dtype, max_new_tokens, ... (see write_answers)

    @property
    def answer_tokens(self) -> int:
        return sum(len(t.response_ids) for t in self.trajectories)


def write_answers(trajectories: list[Trajectory], path: Path, meta: dict) -> Path:
    """Pack ``trajectories`` into ``path`` (.npz); ``meta`` must name the model, gen_dtype and max_new_tokens."""
    for key in ("model", "gen_dtype", "max_new_tokens"):
        if key not in meta:
            raise AnswersError(f"answers meta needs {key!r}")
    ids = [i for t in trajectories for i in t.prompt_ids + t.response_ids]
    largest = max(ids, default=0)
    dtype = np.uint16 if largest < 2**16 else np.uint32
    doc = {"format": ANSWERS_FORMAT, "version": ANSWERS_VERSION, **meta, "answers": len(trajectories),
           "answer_tokens": sum(len(t.response_ids) for t in trajectories)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, tokens=np.asarray(ids, dtype=dtype),
                        prompt_lengths=np.asarray([len(t.prompt_ids) for t in trajectories], dtype=np.uint32),
                        answer_lengths=np.asarray([len(t.response_ids) for t in trajectories], dtype=np.uint32),
                        meta=np.asarray(json.dumps(doc)))
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)  # never a half-written pack
    return path


def read_answers(path: Path) -> AnswerPack:
    """Every answer of a pack written by ``write_answers``; any defect is an AnswersError naming the file."""
    path = Path(path)
    fix = "write it again with 'treeopt pack-answers', or pass --answers none to generate the answers"
    if not path.is_file():
        raise AnswersError(f"--answers {path}: no such file; {fix}")
    try:
        with np.load(path, allow_pickle=False) as pack:
            missing = [key for key in ("tokens", "prompt_lengths", "answer_lengths", "meta") if key not in pack.files]
            if missing:
                raise AnswersError(f"{path}: array {missing[0]!r} is missing; {fix}")
            arrays = {key: pack[key] for key in ("tokens", "prompt_lengths", "answer_lengths", "meta")}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise AnswersError(f"{path}: not a readable .npz ({err}); {fix}") from None
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError:
        raise AnswersError(f"{path}: array 'meta' is not JSON; {fix}") from None
    if not isinstance(meta, dict) or meta.get("format") != ANSWERS_FORMAT or meta.get("version") != ANSWERS_VERSION:
        raise AnswersError(f"{path}: meta fields 'format' and 'version' must be {ANSWERS_FORMAT!r} and {ANSWERS_VERSION}; {fix}")
    tokens = arrays["tokens"].astype(np.int64)
    prompts, answers = arrays["prompt_lengths"].astype(np.int64), arrays["answer_lengths"].astype(np.int64)
    if len(prompts) != len(answers) or int(prompts.sum() + answers.sum()) != len(tokens):
        raise AnswersError(f"{path}: the lengths do not add up to the {len(tokens)} tokens (truncated or edited?); {fix}")
    out, start = [], 0
    for p, a in zip(prompts.tolist(), answers.tolist()):
        ids = tokens[start : start + p + a].tolist()
        out.append(Trajectory(ids[:p], ids[p:]))
        start += p + a
    return AnswerPack(out, meta)


def pack_temperature(meta: dict) -> float:
    """The temperature a pack's answers were drawn at: ``meta["sampling"]["temperature"]`` (written by ``pack-answers
    --gen-temperature`` or ``experiments/sampled_answers.py``), 0 for greedy answers (the shipped pack)."""
    sampling = meta.get("sampling")
    return float(sampling.get("temperature", 0)) if isinstance(sampling, dict) else 0.0


def check_answers_fit(pack: AnswerPack, path: Path, model: str, gen_dtype: str, max_new_tokens: int,
                      gen_temperature: float = 0.0) -> None:
    """AnswersError unless the pack was written by this model, in this dtype, with this answer length limit, at this
    temperature (its seed may differ: other draws of the same text distribution): answers of another setting would
    teach the heads another model's (or dtype's, or temperature's) continuations."""
    want = {"model": model, "gen_dtype": gen_dtype, "max_new_tokens": max_new_tokens, "gen_temperature": float(gen_temperature)}
    have = {**pack.meta, "gen_temperature": pack_temperature(pack.meta)}
    wrong = {k: have.get(k) for k, v in want.items() if have.get(k) != v}
    if wrong:
        flags = {"model": "--model", "gen_dtype": "--gen-dtype", "max_new_tokens": "--max-new-tokens", "gen_temperature": "--gen-temperature"}
        said = ", ".join(f"{k} {have.get(k)!r} (this run: {want[k]!r}; {flags[k]})" for k in wrong)
        raise AnswersError(f"{path}: answers written with {said}; match those flags, or pass --answers none to generate new ones")


def resolve_answers(answers: str, model: str, gen_dtype: str, max_new_tokens: int, gen_temperature: float = 0.0) -> str:
    """``train-heads --answers auto|none|FILE`` -> a pack path, or "" to generate every answer. ``auto``: the
    shipped pack of ``model`` when the run's settings are the pack's (greedy answers)."""
    if answers == "none":
        return ""
    if answers != "auto":
        return answers
    shipped = SHIPPED.get(model)
    fits = {"gen_dtype": gen_dtype, "max_new_tokens": max_new_tokens} == SHIPPED_SETTINGS and gen_temperature == 0
    return str(shipped) if shipped is not None and shipped.exists() and fits else ""


def seed_answers(pack: AnswerPack, jsonl: Path) -> int:
    """Append the pack's answers that ``jsonl`` (train-heads' resumable answer file) lacks; returns how many."""
    jsonl = Path(jsonl)
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    drop_partial_tail(jsonl)
    have = {tuple(t.prompt_ids) for t in read_trajectories(jsonl)}
    new = [t for t in pack.trajectories if tuple(t.prompt_ids) not in have]
    with open(jsonl, "a", encoding="utf-8") as sink:
        for t in new:
            sink.write(json.dumps({"prompt_ids": t.prompt_ids, "response_ids": t.response_ids}) + "\n")
    return len(new)
