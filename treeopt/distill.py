"""Self-distillation data for Medusa heads: the base model's own greedy answers to prompts.

Heads are judged against the base model's argmax, on hidden states of the base model's own outputs,
so they train on exactly that: prompts are answered greedily by the base model (batched, prompts
bucketed by length to keep padding small) and the token ids are appended to a JSONL file, one
``{"prompt_ids": [...], "response_ids": [...]}`` per line. An interrupted run resumes: prompts already
answered in the file are skipped. This module does not train anything (see ``train_heads.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm


@dataclass
class Trajectory:
    prompt_ids: list[int]
    response_ids: list[int]


def read_trajectories(path: Path) -> list[Trajectory]:
    """Every complete line of the file; an unterminated last line (a run killed mid-write) is ignored."""
    out = []
    if not Path(path).exists():
        return out
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]  # the partial tail: drop_partial_tail removes it before the file grows again
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            try:
                row = json.loads(line)
                out.append(Trajectory(row["prompt_ids"], row["response_ids"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{path}:{lineno}: not a trajectory line; delete the file to generate the answers again") from None
    return out


def drop_partial_tail(path: Path) -> None:
    """Cut an unterminated last line left by an interrupted run, so that appending stays line-aligned."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def generate_trajectories(
    loaded,
    prompt_ids: list[list[int]],
    out_path: Path,
    max_new_tokens: int = 128,
    batch_size: int = 32,
    token_budget: int | None = None,
    sampling=None,
) -> list[Trajectory]:
    """Greedy answers for ``prompt_ids`` appended to ``out_path``; stops once ``token_budget`` response
    tokens exist in the file. Returns every trajectory in the file. ``sampling`` (a ``SamplingConfig`` at
    temperature > 0): sampled answers instead, with the runtime's keyed draws (``draws.KeyedSampler``)."""
    from transformers import LogitsProcessorList

    from medusa_runtime.draws import KeyedSampler

    model, tokenizer = loaded.model, loaded.tokenizer
    drop_partial_tail(out_path)
    done = read_trajectories(out_path)
    seen = {tuple(t.prompt_ids) for t in done}
    have = sum(len(t.response_ids) for t in done)
    todo = [p for p in prompt_ids if tuple(p) not in seen]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    eos = set(loaded.eos_token_ids)
    kind = "sampled" if sampling is not None and sampling.sampled else "greedy"
    bar = tqdm(total=token_budget, initial=min(have, token_budget or have), desc=f"distill: {kind} answers", unit="tok")
    with open(out_path, "a", encoding="utf-8") as sink:
        for start in range(0, len(todo), batch_size):
            if token_budget is not None and have >= token_budget:
                break
            # within a batch, sort by length so that left padding stays small
            batch = sorted(todo[start : start + batch_size], key=len)
            width = len(batch[-1])
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(batch):
                input_ids[row, width - len(ids) :] = torch.tensor(ids)
                attention[row, width - len(ids) :] = 1
            with torch.no_grad():
                out = model.generate(
                    input_ids=input_ids.to(loaded.device),
                    attention_mask=attention.to(loaded.device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    logits_processor=LogitsProcessorList([KeyedSampler(sampling, batch, width)] if sampling is not None
                                                         and sampling.sampled else []),
                    pad_token_id=pad_id,
                    cache_implementation="static",  # preallocated: no per-step copy of the whole cache
                )
            for row, ids in enumerate(batch):
                response = []
                for token in out[row, width:].tolist():
                    response.append(token)
                    if token in eos:
                        break
                sink.write(json.dumps({"prompt_ids": ids, "response_ids": response}) + "\n")
                have += len(response)
                bar.update(len(response))
            sink.flush()
    bar.close()
    return read_trajectories(out_path)
