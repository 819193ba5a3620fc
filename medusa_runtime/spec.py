"""The tree spec: the JSON contract between tree builders and the runtime.

    {"format": "medusa-tree", "version": 1, "paths": [[0], [0, 0], [1], [0, 1]], "meta": {...}}

``paths`` are top-k ranks per depth below an implicit root (the base model's own next token); path
(r1..rd) is the node at depth d whose token is rank r_j of head j at each level. Order is meaningful:
a built tree lists paths in insertion order, so its first n paths are its best n-node subtree. This
module is pure Python (no torch) so that commands that need no model stay fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .files import json_type, read_json, write_text_atomic

FORMAT = "medusa-tree"
VERSION = 1


class TreeSpecError(ValueError):
    """A tree spec that cannot be used; the message names the file, the path and the fix."""


@dataclass
class TreeSpec:
    paths: list[tuple[int, ...]]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.paths = [tuple(p) for p in self.paths]  # lists from JSON or callers become hashable tuples

    @property
    def nodes(self) -> int:
        """Tokens per verify step: the root plus one per path."""
        return len(self.paths) + 1

    @property
    def depth(self) -> int:
        return max((len(p) for p in self.paths), default=0)

    @property
    def topk(self) -> int:
        """Candidates needed per head: one more than the largest rank used."""
        return max((r for p in self.paths for r in p), default=-1) + 1

    def planned_tokens_per_s(self, batch_size: int, batching: str) -> float | None:
        """The tokens/s the plan predicted for this tree at ``batch_size`` under ``batching`` (static | continuous),
        or None when it was planned for another batch size or batching mode (or not planned): the one rule both
        benches read a prediction by. Trees planned before the field was written were planned for static batches."""
        planned = self.meta.get("predicted_tokens_per_s")
        if planned is None or self.meta.get("batch_size", 1) != batch_size or self.meta.get("batching", "static") != batching:
            return None
        return float(planned)

    def prefix(self, n: int) -> "TreeSpec":
        """The first n paths (a valid tree when the spec is in insertion order)."""
        return TreeSpec(self.paths[:n], dict(self.meta))

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "paths": [list(p) for p in self.paths], "meta": self.meta}

    def save(self, path: str | Path) -> None:
        """Write the spec atomically: an interrupted save leaves the old file (or none), never half a spec."""
        write_text_atomic(path, json.dumps(self.to_json(), indent=1) + "\n")


def validate_paths(paths, num_heads: int | None = None, where: str = "tree") -> list[tuple[int, ...]]:
    """Check a list of rank paths and return it as tuples. Errors name the offending path."""
    if not isinstance(paths, (list, tuple)):
        raise TreeSpecError(f"{where}: 'paths' must be a list of lists of ranks, got {type(paths).__name__}")
    out: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    for i, path in enumerate(paths):
        if not isinstance(path, (list, tuple)) or not all(isinstance(r, int) and not isinstance(r, bool) for r in path):
            raise TreeSpecError(f"{where}: paths[{i}] = {path!r} is not a list of integer ranks")
        p = tuple(path)
        if not p:
            raise TreeSpecError(f"{where}: paths[{i}] is empty; the root is implicit, remove it")
        if any(r < 0 for r in p):
            raise TreeSpecError(f"{where}: paths[{i}] = {list(p)} has a negative rank; ranks start at 0")
        if p in seen:
            raise TreeSpecError(f"{where}: paths[{i}] = {list(p)} is a duplicate; remove it")
        if num_heads is not None and len(p) > num_heads:
            raise TreeSpecError(
                f"{where}: paths[{i}] = {list(p)} has depth {len(p)} but the heads have only {num_heads}; "
                f"use a tree of depth <= {num_heads} (treeopt build --max-depth {num_heads})"
            )
        seen.add(p)
        out.append(p)
    for i, p in enumerate(out):
        if len(p) > 1 and p[:-1] not in seen:
            raise TreeSpecError(f"{where}: paths[{i}] = {list(p)} lacks its prefix {list(p[:-1])}; add it")
    return out


def load_tree(path: str | Path, num_heads: int | None = None) -> TreeSpec:
    """Read and validate a tree spec JSON file."""
    fix = "write one with 'treeopt build' or convert a medusa_choices list with 'treeopt import'"
    data = read_json(path, "tree", fix, TreeSpecError)
    if isinstance(data, list):
        raise TreeSpecError(f"{path}: a bare list is not a tree spec; convert it with 'treeopt import {path} --out tree.json'")
    return spec_from_json(data, str(path), num_heads, fix)


def spec_from_json(data, where: str, num_heads: int | None = None, fix: str = "re-create it with 'treeopt build'") -> TreeSpec:
    """A parsed spec JSON (format, version, paths, meta) -> a validated TreeSpec; errors name ``where``."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TreeSpecError(f"{where}: field 'format' must be {FORMAT!r}; {fix}")
    if data.get("version") != VERSION:
        raise TreeSpecError(f"{where}: field 'version' is {data.get('version')!r}; this runtime reads version {VERSION}")
    if "paths" not in data:
        raise TreeSpecError(f"{where}: field 'paths' is missing; {fix}")
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise TreeSpecError(f"{where}: field 'meta' must be an object, got a {json_type(meta)}; remove it or make it {{}}")
    return TreeSpec(validate_paths(data["paths"], num_heads, where=where), meta)


def chain_tree(depth: int) -> TreeSpec:
    """The top-1 chain [[0], [0, 0], ...] of the given depth."""
    return TreeSpec([(0,) * d for d in range(1, depth + 1)], {"builder": "chain"})
