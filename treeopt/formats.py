"""Export a tree spec to the forms engines take (checking each engine's limits first), and import them back.

Export formats (``EXPORT_FORMATS``), one consumer each:

* ``medusa``: ``treeopt_tree = [[0], [0, 0], ...]``, to paste into upstream Medusa's
  ``medusa/model/medusa_choices.py`` (``--name`` sets the variable)
* ``medusa-list``: the bare list ``[[0], [0, 0], [1]]`` (upstream's ``--medusa-choices``, which it ``eval``s)
* ``trtllm``: the same list for TensorRT-LLM ``examples/run.py --medusa_choices "<list>"`` (``ast.literal_eval``)
* ``trtllm-yaml``: the YAML list of lists that ``trtllm-bench --medusa_choices FILE`` reads
* ``trtllm-llmapi``: the LLM API / ``trtllm-serve --extra_llm_api_options`` YAML ``speculative_config`` block
* ``triton``: the Triton backend's ``medusa_choices`` value ``{0}\\, {0\\, 0}``, commas escaped for
  ``tools/fill_template.py`` (which splits its substitutions on unescaped commas)
* ``triton-pbtxt``: a ready ``parameters: { key: "medusa_choices" ... }`` block for ``config.pbtxt``
* ``json``: the treeopt spec itself

Nothing is returned for a tree its consumer would refuse, crash on, or silently run differently: the
checks (``check_export``) come from each consumer's source, which ``tests/test_consumers.py``
re-implements. Import (``parse_tree_text``) reads every export format back, and the legacy dense per-head
top-k form (``[1, 7, 6]``). Text is parsed with ``ast.literal_eval`` and ``yaml.safe_load``, never ``eval``.
"""

from __future__ import annotations

import ast
import itertools
import json
import keyword
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from medusa_runtime.files import parse_json, read_text
from medusa_runtime.spec import TreeSpec, TreeSpecError, spec_from_json, validate_paths


# --------------------------------------------------------------------------- engine limits
@dataclass(frozen=True)
class EngineLimits:
    """What an engine can run, as far as the tree's shape goes (from each engine's source; see tests/test_consumers.py).

    ``max_rank`` and ``gap_free_depth`` are what both ``treeopt build --for TARGET`` builds to and ``treeopt
    export`` checks; the other fields are what export cites in its messages.
    """

    name: str
    max_rank: int  # every rank must be < max_rank
    rank_source: str  # the engine file and constant behind max_rank
    gap_free_depth: int = 0  # siblings' ranks are exactly 0..k-1 at depths <= this (where the engine lays out another tree)
    gap_source: str = ""  # the engine file behind gap_free_depth
    max_depth: int | None = None  # the engine's own depth limit, heads aside


# ``treeopt build --for TARGET`` builds only trees that TARGET runs as they are.
BUILD_TARGETS = {
    "medusa": EngineLimits("upstream Medusa", max_rank=10,
                           rank_source="TOPK = 10 in medusa/model/utils.py: rank 10 would read the next head's candidate"),
    "trtllm": EngineLimits("TensorRT-LLM", max_rank=16,
                           rank_source="4-bit rank slots in cpp/tensorrt_llm/runtime/utils/speculativeChoicesUtils.cpp: "
                                       "rank 16 collides with another path",
                           gap_free_depth=1,  # the C++ runtime lays out deeper gaps correctly
                           gap_source="tensorrt_llm/runtime/medusa_utils.py lays out ranks 0..k-1 at the first level",
                           max_depth=16),  # a path is packed in a uint64, 4 bits per rank
    "vllm": EngineLimits("vLLM", max_rank=1,
                         rank_source="vllm/v1/spec_decode/medusa.py drafts each head's argmax: one chain of rank-0 guesses"),
}
DRAFT_VOCAB_TARGETS = ("vllm",)  # engines whose checkpoint carries a draft vocabulary (vLLM: token_map)

def calibration_mismatches(provenance: dict, target: str) -> list[str]:
    """What the stats behind a tree measured that ``target``'s engine does not run (empty: the prediction applies there).
    Engines run plain Medusa heads over the whole vocabulary (vLLM: or the draft vocabulary its checkpoint carries),
    no context lookup, no prefix attention. Stats that say nothing of a field are taken to agree (older stats, trees
    without provenance)."""
    found = []
    engine = provenance.get("engine")
    if engine is not None and engine != target:
        found.append(f"the heads as {BUILD_TARGETS[engine].name if engine in BUILD_TARGETS else engine} runs them")
    if provenance.get("head_kind") not in (None, "plain"):
        found.append(f"{provenance['head_kind']} heads")
    if provenance.get("context_lookup"):
        found.append("context lookup")
    if provenance.get("prefix_attention"):
        found.append("prefix attention")
    if provenance.get("draft_vocab") and target not in DRAFT_VOCAB_TARGETS:
        found.append(f"a draft vocabulary of {provenance['draft_vocab']} tokens")
    return found


def mismatch_warning(where: str, provenance: dict, target: str) -> str | None:
    """One line for ``export`` and ``build --for``, or None when the stats measured what the engine runs."""
    found = calibration_mismatches(provenance, target)
    if not found:
        return None
    vocabulary = "the draft vocabulary of its checkpoint" if target in DRAFT_VOCAB_TARGETS else "the whole vocabulary"
    return (f"warning: {where} comes from stats of {', '.join(found)}; {BUILD_TARGETS[target].name} runs plain Medusa heads "
            f"over {vocabulary} with none of that, so the predicted tokens/step does not apply there: calibrate what "
            f"it runs with 'treeopt calibrate --engine {target} --heads PLAIN_HEADS' and build again")


TRTLLM_DEFAULT_MAX_DRAFT_LEN = 63  # examples/medusa/convert_checkpoint.py --max_draft_len default: the engine's limit
DEFAULT_NAME = "treeopt_tree"


# --------------------------------------------------------------------------- formats
@dataclass(frozen=True)
class ExportSettings:
    """The options of one export, resolved: ``None`` where an option does not apply to the format."""

    num_heads: int | None  # the engine's Medusa heads (given, or the tree's depth where the format writes it)
    max_draft_len: int | None  # the engine's draft-token limit (given, or the format's default)
    name: str | None  # the Python variable of ``medusa``
    max_draft_len_origin: str = "--max-draft-len"  # where max_draft_len came from, for messages


@dataclass(frozen=True)
class ExportFormat:
    """One export format: who reads it, which engine limits apply, which options it takes, and how it is written."""

    name: str
    consumer: str  # who reads the output, named in error messages
    target: str | None  # the BUILD_TARGETS key whose limits apply; None for the treeopt spec itself
    render: Callable[[TreeSpec, ExportSettings], str]
    default_max_draft_len: int | None = None  # the engine's limit when --max-draft-len is not given
    writes_max_draft_len: bool = False  # the output carries max_draft_len (and num_medusa_heads), filled from the tree
    takes_name: bool = False

    @property
    def takes_max_draft_len(self) -> bool:
        return self.default_max_draft_len is not None or self.writes_max_draft_len


def _list_literal(spec: TreeSpec) -> str:
    """``[[0], [0, 0], [1]]``: JSON list syntax, which is also a Python literal."""
    return json.dumps([list(p) for p in spec.paths])


def _summary(spec: TreeSpec) -> str:
    return f"treeopt tree: {len(spec.paths)} paths ({spec.nodes} tokens per step), depth {spec.depth}"


def _render_medusa(spec: TreeSpec, settings: ExportSettings) -> str:
    return (f"# {_summary(spec)}; paste into medusa/model/medusa_choices.py and pass medusa_choices={settings.name}\n"
            f"{settings.name} = {_list_literal(spec)}\n")


def _render_list(spec: TreeSpec, settings: ExportSettings) -> str:
    return _list_literal(spec) + "\n"


def _yaml_paths(spec: TreeSpec, indent: str) -> str:
    """One ``- [r1, r2]`` line per path (a YAML block list of flow lists)."""
    return "".join(f"{indent}- {json.dumps(list(p))}\n" for p in spec.paths)


def _render_trtllm_yaml(spec: TreeSpec, settings: ExportSettings) -> str:
    return f"# {_summary(spec)}; for trtllm-bench --medusa_choices THIS_FILE\n" + _yaml_paths(spec, "")


def _render_llmapi(spec: TreeSpec, settings: ExportSettings) -> str:
    return (f"# {_summary(spec)}; TensorRT-LLM LLM API options (trtllm-serve / trtllm-bench --extra_llm_api_options "
            f"THIS_FILE); Medusa runs on the TensorRT backend only\n"
            "speculative_config:\n"
            "  decoding_type: Medusa\n"
            f"  max_draft_len: {settings.max_draft_len}\n"
            f"  num_medusa_heads: {settings.num_heads}\n"
            "  medusa_choices:\n" + _yaml_paths(spec, "    "))


def triton_value(spec: TreeSpec) -> str:
    """The Triton backend's ``medusa_choices`` string, unescaped: ``{0}, {0, 0}, {1}``."""
    return ", ".join("{" + ", ".join(str(r) for r in p) + "}" for p in spec.paths)


def escape_for_fill_template(value: str) -> str:
    """``value`` with its commas written ``\\,``, as ``tools/fill_template.py`` needs.

    fill_template splits its argument on unescaped commas, then each piece once more on unescaped colons,
    dropping one level of backslashes each time; a value with a colon or a backslash would need more than this
    (Triton values of this module have neither, so it refuses them rather than guess)."""
    if ":" in value or "\\" in value:
        raise TreeSpecError(f"cannot escape {value!r} for fill_template.py: it holds ':' or '\\'")
    return value.replace(",", "\\,")


def _render_triton(spec: TreeSpec, settings: ExportSettings) -> str:
    return escape_for_fill_template(triton_value(spec)) + "\n"


def _render_pbtxt(spec: TreeSpec, settings: ExportSettings) -> str:
    return (f"# {_summary(spec)}; replaces the medusa_choices parameter of the tensorrt_llm model's config.pbtxt "
            "(with decoding_mode medusa)\n"
            "parameters: {\n"
            '  key: "medusa_choices"\n'
            "  value: {\n"
            f'    string_value: "{triton_value(spec)}"\n'
            "  }\n"
            "}\n")


def _render_json(spec: TreeSpec, settings: ExportSettings) -> str:
    return json.dumps(spec.to_json(), indent=1) + "\n"


_TRT = dict(target="trtllm", default_max_draft_len=TRTLLM_DEFAULT_MAX_DRAFT_LEN)
FORMATS = {f.name: f for f in (
    ExportFormat("medusa", "upstream Medusa (medusa_choices.py)", "medusa", _render_medusa, takes_name=True),
    ExportFormat("medusa-list", "upstream Medusa (--medusa-choices)", "medusa", _render_list),
    ExportFormat("trtllm", "TensorRT-LLM (examples/run.py --medusa_choices)", render=_render_list, **_TRT),
    ExportFormat("trtllm-yaml", "TensorRT-LLM (trtllm-bench --medusa_choices)", render=_render_trtllm_yaml, **_TRT),
    ExportFormat("trtllm-llmapi", "TensorRT-LLM (LLM API speculative_config)", "trtllm", _render_llmapi,
                 writes_max_draft_len=True),
    ExportFormat("triton", "TensorRT-LLM Triton backend (fill_template.py)", render=_render_triton, **_TRT),
    ExportFormat("triton-pbtxt", "TensorRT-LLM Triton backend (config.pbtxt)", render=_render_pbtxt, **_TRT),
    ExportFormat("json", "treeopt", None, _render_json),
)}
EXPORT_FORMATS = tuple(FORMATS)


def export_format(fmt: str) -> ExportFormat:
    """The format called ``fmt``; an error listing them all otherwise."""
    if fmt not in FORMATS:
        raise TreeSpecError(f"--format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    return FORMATS[fmt]


# --------------------------------------------------------------------------- export
def export_tree(spec: TreeSpec, fmt: str, *, num_heads: int | None = None, max_draft_len: int | None = None,
                name: str | None = None, where: str = "tree") -> str:
    """The text of ``spec`` in format ``fmt``, ending in a newline.

    ``num_heads``: the engine's Medusa heads (deeper trees are refused; ``trtllm-llmapi`` writes it, default the
    tree's depth). ``max_draft_len``: the TensorRT-LLM engine's draft-token limit (default 63; ``trtllm-llmapi``
    writes it, default the number of paths). ``name``: the variable of ``medusa``. ``where`` (the tree's file)
    starts every message. Raises ``TreeSpecError`` for an option the format does not take, or a tree its consumer
    cannot run as it is; writes nothing itself.
    """
    form = export_format(fmt)
    settings = resolve_settings(spec, form, num_heads, max_draft_len, name)
    check_export(spec, form, settings, where)
    return form.render(spec, settings)


def resolve_settings(spec: TreeSpec, form: ExportFormat, num_heads: int | None, max_draft_len: int | None,
                     name: str | None) -> ExportSettings:
    """Check that each given option applies to ``form`` and is valid, and fill in the format's defaults."""
    if num_heads is not None and num_heads < 1:
        raise TreeSpecError(f"--num-heads {num_heads}: the engine's Medusa heads, at least 1")
    if max_draft_len is not None:
        if not form.takes_max_draft_len:
            takers = ", ".join(f.name for f in FORMATS.values() if f.takes_max_draft_len)
            raise TreeSpecError(f"--max-draft-len applies to the TensorRT-LLM formats ({takers}), not to --format {form.name}")
        if max_draft_len < 1:
            raise TreeSpecError(f"--max-draft-len {max_draft_len}: the engine's draft-token limit, at least 1")
    if name is not None and not form.takes_name:
        raise TreeSpecError(f"--name applies to --format medusa only (the Python variable), not to --format {form.name}")
    if form.takes_name:
        name = DEFAULT_NAME if name is None else name
        if not name.isidentifier() or keyword.iskeyword(name):
            raise TreeSpecError(f"--name {name!r}: not a Python variable name; use e.g. --name {DEFAULT_NAME}")
    origin = "--max-draft-len"
    if form.writes_max_draft_len:
        num_heads = spec.depth if num_heads is None else num_heads
        max_draft_len = len(spec.paths) if max_draft_len is None else max_draft_len
    elif max_draft_len is None and form.default_max_draft_len is not None:
        max_draft_len = form.default_max_draft_len
        origin = ("the engine default of examples/medusa/convert_checkpoint.py; "
                  "pass --max-draft-len with your engine's value")
    return ExportSettings(num_heads, max_draft_len, name, origin)


def check_export(spec: TreeSpec, form: ExportFormat, settings: ExportSettings, where: str) -> None:
    """Raise ``TreeSpecError`` unless ``form``'s consumer runs ``spec`` exactly as treeopt evaluated it.

    Always: a well-formed tree (no duplicate; every path's prefix present, since TensorRT-LLM silently hangs an
    orphan under the root) no deeper than ``settings.num_heads``. For an engine format also: not empty, ranks
    and depth within the engine's limits, no sibling gap where the engine lays out another tree, and no more
    paths than the engine's ``max_draft_len``.
    """
    paths = validate_paths(list(spec.paths), where=where)
    _check_heads(paths, settings.num_heads, form, where)
    if form.target is None:
        return
    limits = BUILD_TARGETS[form.target]
    _check_not_empty(paths, form, where)
    _check_ranks(paths, limits, form, where)
    _check_engine_depth(paths, limits, form, where)
    _check_gaps(paths, limits, form, where)
    _check_draft_len(paths, settings, form, where)


def _check_heads(paths: list[tuple[int, ...]], num_heads: int | None, form: ExportFormat, where: str) -> None:
    """Every path no deeper than the engine's heads (each level reads one head)."""
    for i, p in enumerate(paths):
        if num_heads is not None and len(p) > num_heads:
            raise TreeSpecError(
                f"{where}: paths[{i}] = {list(p)} has depth {len(p)} but --num-heads is {num_heads}; {form.consumer} "
                f"reads one head per level; rebuild with 'treeopt build --max-depth {num_heads}'")


def _check_not_empty(paths: list[tuple[int, ...]], form: ExportFormat, where: str) -> None:
    if not paths:
        raise TreeSpecError(
            f"{where}: the tree has no paths; {form.consumer} cannot take an empty tree (it fails or falls back to its "
            f"default tree); build one with 'treeopt build STATS --budget N' (plain decoding needs no Medusa tree)")


def _check_ranks(paths: list[tuple[int, ...]], limits: EngineLimits, form: ExportFormat, where: str) -> None:
    """Every rank < the engine's ``max_rank``."""
    for i, p in enumerate(paths):
        rank = max(p)
        if rank >= limits.max_rank:
            raise TreeSpecError(
                f"{where}: paths[{i}] = {list(p)} uses rank {rank}, but {form.consumer} takes ranks < {limits.max_rank} "
                f"({limits.rank_source}); rebuild with 'treeopt build --for {form.target}' "
                f"(or --max-children {limits.max_rank})")


def _check_engine_depth(paths: list[tuple[int, ...]], limits: EngineLimits, form: ExportFormat, where: str) -> None:
    """Every path within the engine's own depth limit, whatever its heads."""
    for i, p in enumerate(paths):
        if limits.max_depth is not None and len(p) > limits.max_depth:
            raise TreeSpecError(
                f"{where}: paths[{i}] = {list(p)} has depth {len(p)}, but {form.consumer} packs a path in 64 bits, "
                f"4 per rank, so depth <= {limits.max_depth}; rebuild with 'treeopt build --max-depth {limits.max_depth}'")


def sibling_gaps(paths: list[tuple[int, ...]], max_depth: int) -> list[tuple[tuple[int, ...], list[int], int]]:
    """(parent, its children's ranks, the first missing rank) for each node at depth < ``max_depth`` whose
    children's ranks are not exactly 0..k-1."""
    children: dict[tuple[int, ...], set[int]] = {}
    for p in paths:
        if len(p) <= max_depth:
            children.setdefault(p[:-1], set()).add(p[-1])
    gaps = []
    for parent, ranks in children.items():
        missing = [r for r in range(max(ranks)) if r not in ranks]
        if missing:
            gaps.append((parent, sorted(ranks), missing[0]))
    return gaps


def _check_gaps(paths: list[tuple[int, ...]], limits: EngineLimits, form: ExportFormat, where: str) -> None:
    """No rank r+1 without rank r among siblings, at the depths where the engine would build another tree."""
    for parent, ranks, missing in sibling_gaps(paths, limits.gap_free_depth):
        whose = "the root" if not parent else f"path {list(parent)}"
        raise TreeSpecError(
            f"{where}: the children of {whose} have ranks {ranks}, rank {missing} missing; {form.consumer} would run "
            f"another tree ({limits.gap_source}); rebuild with 'treeopt build --for {form.target}'")


def _check_draft_len(paths: list[tuple[int, ...]], settings: ExportSettings, form: ExportFormat, where: str) -> None:
    """No more paths (draft tokens) than the engine's ``max_draft_len``."""
    limit = settings.max_draft_len
    if limit is not None and len(paths) > limit:
        raise TreeSpecError(
            f"{where}: {len(paths)} paths, but max_draft_len is {limit} ({settings.max_draft_len_origin}); "
            f"{form.consumer} refuses more draft "
            f"tokens than the engine was built for; export a smaller tree ('treeopt build --budget {limit}')")


# --------------------------------------------------------------------------- import
def dense_topk_paths(widths: list[int]) -> list[tuple[int, ...]]:
    """Legacy dense form: all paths with rank < widths[j] at depth j, shallow first."""
    paths = []
    for depth in range(1, len(widths) + 1):
        paths += list(itertools.product(*[range(w) for w in widths[:depth]]))
    return paths


_PBTXT_VALUE = re.compile(r'key\s*:\s*"medusa_choices"\s*value\s*:?\s*\{\s*string_value\s*:\s*"([^"]*)"')


def parse_tree_text(text: str, where: str) -> TreeSpec:
    """Any export format (or a legacy dense top-k list) -> a validated spec, paths in the order given.

    Whole-line ``#`` comments are skipped first (Python, YAML and pbtxt all allow them). Raises
    ``TreeSpecError`` naming ``where`` for text that is none of the formats or holds an invalid tree.
    """
    body = _without_comment_lines(text)
    if not body:
        raise TreeSpecError(f"{where}: empty file")
    if _is_spec_json(body):
        return _parse_spec_json(body, where)
    return _spec_from_value(_parse_engine_value(body, where), where)


def _without_comment_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")).strip()


def _is_spec_json(body: str) -> bool:
    return body.startswith("{") and '"format"' in body


def _parse_engine_value(body: str, where: str):
    """The list an engine format holds (not yet validated), chosen by the text's first characters."""
    if _PBTXT_VALUE.search(body) or body.startswith("parameters"):
        return _parse_pbtxt(body, where)
    if body.startswith("medusa_choices:"):  # a whole fill_template.py substitution
        body = body.split(":", 1)[1].strip()
    if body.startswith("{"):
        return _parse_triton(body, where)
    if body.startswith("-"):
        return _yaml(body, where)
    if re.match(r"[A-Za-z_]\w*\s*:", body):
        return _parse_llmapi(body, where)
    if "=" in body.split("[", 1)[0]:  # "name = [[0], ...]" as in upstream's medusa_choices.py
        body = body.split("=", 1)[1]
    return _literal(body, where)


def _parse_spec_json(body: str, where: str) -> TreeSpec:
    fix = "re-create it with 'treeopt build' or 'treeopt import'"
    return spec_from_json(parse_json(body, where, fix, TreeSpecError), where, fix=fix)


def _unescape_fill_template(value: str) -> str:
    """Undo fill_template.py's escaping: a backslash keeps the next character as it is."""
    out, escaped = [], False
    for char in value:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def _parse_triton(body: str, where: str):
    """``{0}, {0, 0}`` (or its fill_template-escaped form ``{0}\\, {0\\, 0}``) -> a list of lists."""
    value = _unescape_fill_template(body)
    return _literal("[" + value.replace("{", "[").replace("}", "]") + "]", where)


def _parse_pbtxt(body: str, where: str):
    """The ``medusa_choices`` parameter of a config.pbtxt (or of the block ``triton-pbtxt`` writes)."""
    match = _PBTXT_VALUE.search(body)
    if match is None:
        raise TreeSpecError(f'{where}: no parameter key: "medusa_choices" with a string_value')
    value = match.group(1).strip()
    if not value or value.startswith("${"):
        raise TreeSpecError(f"{where}: the medusa_choices parameter is not filled in ({value!r}); "
                            f"write it with 'treeopt export TREE --format triton-pbtxt'")
    return _parse_triton(value, where)


def _yaml(body: str, where: str):
    import yaml

    try:
        return yaml.safe_load(body)
    except (yaml.YAMLError, RecursionError) as err:
        raise TreeSpecError(f"{where}: not valid YAML ({err.__class__.__name__}); expected a list such as "
                            f"'- [0]' lines or a speculative_config block") from None


def _parse_llmapi(body: str, where: str):
    """``speculative_config: {decoding_type: Medusa, ..., medusa_choices: [...]}`` -> its medusa_choices."""
    data = _yaml(body, where)
    config = data.get("speculative_config") if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise TreeSpecError(f"{where}: a YAML mapping without a speculative_config block; expected "
                            f"'speculative_config: {{decoding_type: Medusa, medusa_choices: [...]}}'")
    if config.get("decoding_type") != "Medusa":
        raise TreeSpecError(f"{where}: speculative_config.decoding_type is {config.get('decoding_type')!r}, not 'Medusa'")
    if "medusa_choices" not in config:
        raise TreeSpecError(f"{where}: speculative_config has no medusa_choices")
    return config["medusa_choices"]


def _spec_from_value(value, where: str) -> TreeSpec:
    """A parsed list of paths (or a dense per-head top-k list) -> a validated spec."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if any(v < 1 for v in value):
            raise TreeSpecError(f"{where}: dense per-head top-k form needs widths >= 1, got {list(value)}")
        return TreeSpec(dense_topk_paths(list(value)), {"imported_from": "dense per-head top-k", "widths": list(value)})
    if not isinstance(value, (list, tuple)):
        raise TreeSpecError(f"{where}: expected a list of paths such as [[0], [0, 0], [1]]")
    return TreeSpec(validate_paths([list(p) if isinstance(p, tuple) else p for p in value], where=where), {})


def _literal(text: str, where: str):
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:  # TypeError: e.g. {[0]}, an unhashable set
        raise TreeSpecError(f"{where}: not a Python/JSON literal list of paths ({err.__class__.__name__}); "
                            f"expected e.g. [[0], [0, 0], [1]]") from None


def import_tree(path: str | Path) -> TreeSpec:
    """Read a spec or any export format from ``path`` (see ``parse_tree_text``); a tree from an engine format
    records the file in ``meta['imported_from']`` (a spec keeps its own meta)."""
    text = read_text(path, "tree", "give a tree spec or an engine's medusa_choices", TreeSpecError)
    spec = parse_tree_text(text, str(path))
    if not _is_spec_json(_without_comment_lines(text)):
        spec.meta.setdefault("imported_from", str(path))
    return spec
