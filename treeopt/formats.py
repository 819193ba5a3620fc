"""Export a tree spec to the formats engines take, and import theirs. Pure Python, no eval.

* ``medusa``: upstream Medusa / TensorRT-LLM ``medusa_choices`` list, e.g. ``[[0], [0, 0], [1]]``
* ``trtllm-yaml``: the YAML list of lists that ``trtllm-bench --medusa_choices FILE`` reads
* ``triton``: the TensorRT-LLM Triton backend string, e.g. ``{0}, {0, 0}, {1}``
* ``json``: the treeopt spec itself
Import also reads the legacy dense per-head top-k form (``[1, 7, 6]``: every path whose rank at depth
j is below the j-th number). Strings are parsed with ``ast.literal_eval``, never ``eval``.
"""

from __future__ import annotations

import ast
import itertools
import json
from pathlib import Path

from medusa_runtime.spec import FORMAT, TreeSpec, TreeSpecError, validate_paths

EXPORT_FORMATS = ("medusa", "trtllm-yaml", "triton", "json")


def export_tree(spec: TreeSpec, fmt: str) -> str:
    paths = [list(p) for p in spec.paths]
    if fmt == "medusa":
        return json.dumps(paths)
    if fmt == "trtllm-yaml":
        return "".join(f"- {json.dumps(p)}\n" for p in paths) if paths else "[]\n"
    if fmt == "triton":
        return ", ".join("{" + ", ".join(map(str, p)) + "}" for p in paths)
    if fmt == "json":
        return json.dumps(spec.to_json(), indent=1)
    raise TreeSpecError(f"--format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")


def dense_topk_paths(widths: list[int]) -> list[tuple[int, ...]]:
    """Legacy dense form: all paths with rank < widths[j] at depth j, shallow first."""
    paths = []
    for depth in range(1, len(widths) + 1):
        paths += list(itertools.product(*[range(w) for w in widths[:depth]]))
    return paths


def parse_tree_text(text: str, where: str) -> TreeSpec:
    """Any supported textual form -> a validated spec (order kept as given)."""
    stripped = text.strip()
    if not stripped:
        raise TreeSpecError(f"{where}: empty file")
    if stripped.startswith("{") and '"format"' in stripped:
        data = json.loads(stripped)
        if data.get("format") != FORMAT:
            raise TreeSpecError(f"{where}: a JSON object without format {FORMAT!r}")
        return TreeSpec(validate_paths(data.get("paths"), where=where), data.get("meta", {}))
    if stripped.startswith("-") or stripped.startswith("#"):  # YAML list of lists
        import yaml

        value = yaml.safe_load(stripped)
    elif stripped.startswith("{"):  # Triton string: {0}, {0, 0}
        value = _literal("[" + stripped.replace("{", "[").replace("}", "]") + "]", where)
    else:
        if "=" in stripped.split("[", 1)[0]:  # "medusa_choices = [[0], ...]" as in upstream Python files
            stripped = stripped.split("=", 1)[1]
        value = _literal(stripped, where)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if any(v < 1 for v in value):
            raise TreeSpecError(f"{where}: dense per-head top-k form needs widths >= 1, got {list(value)}")
        return TreeSpec(dense_topk_paths(list(value)), {"imported_from": "dense per-head top-k", "widths": list(value)})
    if not isinstance(value, (list, tuple)):
        raise TreeSpecError(f"{where}: expected a list of paths such as [[0], [0, 0], [1]]")
    return TreeSpec(validate_paths([list(p) if isinstance(p, tuple) else p for p in value], where=where), {})


def _literal(text: str, where: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        raise TreeSpecError(f"{where}: not a Python/JSON literal list of paths ({err.__class__.__name__}); "
                            f"expected e.g. [[0], [0, 0], [1]]") from None


def import_tree(path: str | Path) -> TreeSpec:
    path = Path(path)
    if not path.exists():
        raise TreeSpecError(f"{path}: no such file")
    spec = parse_tree_text(path.read_text(encoding="utf-8"), str(path))
    spec.meta.setdefault("imported_from", str(path))
    return spec
