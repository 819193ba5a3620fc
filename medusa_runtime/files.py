"""Reading and writing the project's small text files: one-line errors that name the file, atomic writes.

Every reader of a JSON file (tree specs, stats, latency, heads ``config.json``, draft vocabularies) goes
through ``read_json``/``read_json_object``, so a missing, unreadable, binary or truncated file is refused
with ``{path}: <what is wrong>; <fix>`` in the reader's own error class, never with a traceback. Writers use
``write_text_atomic``: the text goes to a temporary file in the same folder and replaces the target in one
``os.replace``, so an interrupted write never leaves a partial file. Pure Python (no torch).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def read_text(path: str | Path, what: str, fix: str, error: type[Exception] = ValueError) -> str:
    """The UTF-8 text of ``path``; ``what`` names the kind of file ("tree", "stats"), ``fix`` says how to get a good one."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file; {fix}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a {what} file; {fix}") from None
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text (byte {err.start} is {err.object[err.start:err.start + 1]!r}: binary or corrupt); {fix}") from None
    except OSError as err:
        raise error(f"{path}: cannot be read ({err.strerror or err.__class__.__name__}); {fix}") from None


def parse_json(text: str, where: str, fix: str, error: type[Exception] = ValueError) -> Any:
    """``json.loads`` whose failures are one-line ``error``s naming ``where`` (a file, or ``file:line``)."""
    if not text.strip():
        raise error(f"{where}: empty file; {fix}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{where}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); {fix}") from None
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply to be read; {fix}") from None


def read_json(path: str | Path, what: str, fix: str, error: type[Exception] = ValueError) -> Any:
    return parse_json(read_text(path, what, fix, error), str(path), fix, error)


def read_json_object(path: str | Path, what: str, fix: str, error: type[Exception] = ValueError) -> dict:
    """A JSON file that must hold one object (every format of this project but the legacy bare lists)."""
    data = read_json(path, what, fix, error)
    if not isinstance(data, dict):
        raise error(f"{path}: holds a JSON {json_type(data)}, not the object a {what} file holds; {fix}")
    return data


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages: 'string', 'list', 'number', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


def is_int(value: Any) -> bool:
    """A JSON integer (``true``/``false`` are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_positive_number(value: Any) -> bool:
    """A finite JSON number > 0 (``NaN``/``Infinity``, which Python's json accepts, are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def one_line(err: BaseException, limit: int = 200) -> str:
    """An exception's message fit for a one-line error: whitespace collapsed (torch's and transformers' run to a
    page), cut at ``limit`` characters."""
    text = " ".join(str(err).split()) or err.__class__.__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and one ``os.replace``:
    readers (and a later run after an interruption) see the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")  # same folder: os.replace stays one rename
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when the write or the rename failed
