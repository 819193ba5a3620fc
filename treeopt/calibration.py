"""Calibration: measure the heads on rollouts of the base model, greedy or sampled with the user's settings.

Each prompt is rolled out (greedy, or at temperature > 0 sampled with the runtime's keyed draws, so the rollout is
the very text ``bench`` and the runtime produce for that prompt and seed), then one forward over prompt + answer
gives the hidden state at every position, and the heads' top-k there are compared with the true future tokens.
Under sample-and-match a tree node is reached exactly when the target's draws equal the node's tokens, which is
what a sampled rollout's continuation is, so the same rank statistics, replay and build serve every temperature.
The result is a ``CalibrationStats`` (see ``stats.py``) whose provenance (``stats_provenance``: the one place it
is made) records the heads and the sampling settings. This module needs torch; ``build`` and ``evaluate`` do not.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.drafts import DraftOrder
from medusa_runtime.draws import KeyedNoise, prompt_key
from medusa_runtime.sampling import SamplingConfig
from medusa_runtime.checkpoint import DRAFT_VOCAB_FILE, WEIGHT_FILES, read_heads_config
from medusa_runtime.heads import true_path
from medusa_runtime.lookup import CONFIG_KEY as LOOKUP_KEY
from medusa_runtime.lookup import merge, true_path_proposals
from medusa_runtime.models import dtype_name
from medusa_runtime.spec import chain_tree

from . import __version__
from .head_temperature import GRID, MIN_PROMPTS, combine, fit_head_temperatures
from .stats import CalibrationStats

ROLLOUT_BATCH = 8  # prompts answered together by the batched rollout; shards split the prompts in these blocks
ROLLOUTS = ("batched", "runtime")  # the first is the default, for the API and the CLI alike


class ShardError(ValueError):
    pass


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ShardError(f"--shard {text!r}: write it as I/N, e.g. 0/4 for the first of four shards") from None
    if count < 1 or not 0 <= index < count:
        raise ShardError(f"--shard {text!r}: needs N >= 1 and 0 <= I < N (shards are numbered from 0)")
    return index, count


def shard_prompts(num_prompts: int, index: int, count: int) -> list[int]:
    """The prompts of shard ``index`` of ``count``: every count-th block of ROLLOUT_BATCH prompts.

    Whole blocks, so that the batched rollout answers each prompt in the same batch as one run over all
    prompts does (left padding depends on the batch): merged shards then equal that run exactly."""
    return [i for i in range(num_prompts) if (i // ROLLOUT_BATCH) % count == index]


def heads_fingerprint(heads_path: str | Path | None) -> str | None:
    """Short sha256 of the heads' weight file and draft vocabulary: identifies the heads a tree was built for."""
    if heads_path is None:
        return None
    for name in WEIGHT_FILES:
        path = Path(heads_path) / name
        if path.exists():
            digest = hashlib.sha256(path.read_bytes())
            draft = Path(heads_path) / DRAFT_VOCAB_FILE
            if draft.exists():  # the guesses change with it, so do the stats
                digest.update(draft.read_bytes())
            config = Path(heads_path) / "config.json"
            lookup = read_heads_config(config).get(LOOKUP_KEY) if config.exists() else None
            if lookup is not None:  # and with the context lookup
                digest.update(json.dumps(lookup.to_config(), sort_keys=True).encode())
            return digest.hexdigest()[:12]
    return None


def stats_provenance(heads, heads_path: str | Path | None, prompt_source: str, select: str | None, prompts_total: int,
                     sampling: SamplingConfig | None = None, command: str | None = None, engine: str | None = None) -> dict:
    """What calibration stats record of where they came from: the one place ``calibrate``, ``demo`` and ``tune``
    make it. ``export`` and ``bench`` read it to warn when a tree runs on other heads, another engine or other
    sampling settings. ``engine``: the heads were run as that engine runs them (``heads`` is their engine view)."""
    config = heads.config
    provenance = {
        "engine": engine,
        "heads": None if heads_path is None else str(heads_path), "heads_sha256": heads_fingerprint(heads_path),
        "head_kind": config.kind, "draft_vocab": None if heads.draft_vocab is None else len(heads.draft_vocab),
        "prompt_source": prompt_source, "select": select, "prompts_total": prompts_total,
        "sampling": (sampling or SamplingConfig()).settings(), "drafts": (sampling or SamplingConfig()).draft_settings(),
        "command": command,
    }
    if config.context_lookup is not None:  # engines that take the tree do not do the lookup: export warns
        provenance["context_lookup"] = config.context_lookup.to_config()
    if config.prefix_attention is not None:  # nor prefix attention
        provenance["prefix_attention"] = config.prefix_attention.to_config()
    return provenance


@dataclass
class AnswerGuesses:
    """What the heads see along one answer: their logits at every new-token position, the true future tokens and the
    context lookup's proposals (teacher forcing), and where the answer's noise is keyed (coupled drafts)."""

    logits: torch.Tensor  # [R, K, V'] head k at new-token position t (0 = the last prompt token), draft columns
    future: torch.Tensor  # [R, K] the token head k should guess there: new token t+k+2 (-1: past the answer)
    proposals: torch.Tensor | None  # [R, K] the lookup's proposal (-1: none); None for heads without the lookup
    key: int  # the prompt's key (draws.prompt_key)
    first: int  # absolute position that row 0's head 0 guesses (row t's head k guesses first + t + k)


@torch.inference_mode()
def answer_guesses(loaded, heads, prompt_ids: list[int], response: list[int]) -> AnswerGuesses:
    """One forward over prompt + answer, then every head at every new-token position (sequential heads read the true
    path before them: exactly what the runtime feeds them on the one path that can be accepted, so ranks along it
    replay the runtime; past the answer's end nothing is counted)."""
    ids = torch.tensor([prompt_ids + response], device=loaded.device)
    hidden = loaded.model.base_model(input_ids=ids).last_hidden_state[0, len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(response)]
    resp = torch.tensor(response, dtype=torch.long)
    R, K = hidden.shape[0], heads.num_heads
    roots = resp[:R].to(loaded.device)  # [R]: at new-token position t the root is new token t+1
    future = torch.full((R, K), -1, dtype=torch.long)
    for k in range(K):  # head k at t guesses new token t+k+2, i.e. response[t+k+1]
        n = max(R - (k + 1), 0)
        future[:n, k] = resp[k + 1 : k + 1 + n]
    path = true_path(future).to(loaded.device)  # [R, K-1]
    hidden = heads.read_context(hidden[None])[0]  # with prefix attention: its layer over the answer, as the runtime grows it
    logits = heads.guess_logits(hidden, root=roots, path=path).float()  # [R, K, V'], the runtime's own (draft vocabulary included)
    lookup = heads.config.context_lookup
    proposals = None if lookup is None else true_path_proposals(ids[0].cpu(), len(prompt_ids), R, K, lookup)
    return AnswerGuesses(logits, future, proposals, prompt_key(prompt_ids), len(prompt_ids) + 1)


def ranks_of(guesses: AnswerGuesses, heads, topk: int, drafts: DraftOrder, noise) -> list[list[int]]:
    """rows[t][k]: rank of the true token among head k's top-k at new-token position t in ``drafts``' order (the
    lookup's proposal first, as the runtime puts it), -1 for a miss or past the answer."""
    R, K = guesses.future.shape
    order = drafts.along(noise, guesses.key, guesses.first, R, K)
    top = heads.top_tokens(guesses.logits, topk, order).cpu()  # [R, K, topk]
    if guesses.proposals is not None:
        top = merge(top, guesses.proposals)
    match = top == guesses.future[..., None]  # [R, K, topk]
    ranks = torch.where(match.any(-1), match.float().argmax(-1), torch.full((R, K), -1))
    return ranks.tolist()


def rollout_answers(loaded, heads, prompt_ids: list[list[int]], max_new_tokens: int, rollout: str, progress: bool,
                    sampling: SamplingConfig | None = None, answers: Path | None = None) -> list[list[int]]:
    """The base model's answers, greedy or (temperature > 0) sampled with keyed draws. ``runtime``: one prompt at a
    time through the Medusa runtime (exactly the tokens the runtime will produce); ``batched``: Hugging Face
    ``generate`` on batches of prompts (several times faster on CPU; left padding can flip a rare near-tie).
    ``answers`` (batched only): a JSONL file the answers are appended to as they are made and read back from, so an
    interrupted calibration resumes and another draft rule reuses the same text; its settings are kept beside it
    (``FILE.settings.json``) and a file made with other settings is refused."""
    sampling = sampling or SamplingConfig()
    if rollout == "runtime":
        if answers is not None:
            raise ValueError("--answers keeps batched rollouts; use --rollout batched or leave out --answers")
        decoder = MedusaDecoder(loaded.model, heads, chain_tree(heads.num_heads), loaded.eos_token_ids, sampling)
        return [decoder.generate(ids, max_new_tokens).tokens
                for ids in tqdm(prompt_ids, desc="calibrate: rollouts", disable=not progress)]
    if rollout != "batched":
        raise ValueError(f"--rollout {rollout!r}: use 'batched' or 'runtime'")
    import tempfile

    from .distill import generate_trajectories

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(answers) if answers is not None else Path(tmp) / "rollouts.jsonl"
        if answers is not None:
            _check_answers_settings(path, {"model": loaded.name, "dtype": dtype_name(loaded.dtype), "max_new_tokens": max_new_tokens,
                                           "sampling": sampling.settings(), "batch": ROLLOUT_BATCH})
        done = generate_trajectories(loaded, prompt_ids, path, max_new_tokens, batch_size=ROLLOUT_BATCH, sampling=sampling)
    by_prompt = {tuple(t.prompt_ids): t.response_ids for t in done}
    return [by_prompt[tuple(ids)] for ids in prompt_ids]


def _check_answers_settings(path: Path, settings: dict) -> None:
    """Write ``path``'s settings beside it, or check that the answers already there were made with these."""
    stamp = path.with_name(path.name + ".settings.json")
    if path.exists() and path.stat().st_size > 0:
        made = json.loads(stamp.read_text(encoding="utf-8")) if stamp.exists() else None
        if made != settings:
            raise ValueError(f"--answers {path}: made with {made} (from {stamp.name}), not {settings}; "
                             f"pass another file or delete this one")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(settings) + "\n", encoding="utf-8")


def calibrate(loaded, heads, prompt_ids: list[list[int]], max_new_tokens: int = 128, topk: int = 10,
              provenance: dict | None = None, progress: bool = True, rollout: str = ROLLOUTS[0],
              prompt_indices: list[int] | None = None, sampling: SamplingConfig | None = None,
              answers: Path | None = None) -> CalibrationStats:
    """Stats of these prompts (``answers``: see ``rollout_answers``); ``prompt_indices``: their places in the full
    prompt list (for shards); ``sampling``: the settings the rollouts are drawn with (greedy by default; they must equal ``provenance['sampling']``) and the
    draft order the heads' guesses are ranked in. Coupled drafts without a head temperature get one fitted on these
    prompts (``head_temperature.py``), recorded in the provenance with the figures behind it."""
    sampling = sampling or SamplingConfig()
    if provenance is not None and provenance.get("sampling", sampling.settings()) != sampling.settings():
        raise ValueError(f"provenance says {provenance['sampling']} but the rollouts are drawn with {sampling.settings()}")
    if topk < 1:
        raise ValueError(f"--topk {topk}: must be >= 1")
    vocab = loaded.model.config.vocab_size
    topk = min(topk, vocab)
    sampling.head_temperatures(heads.num_heads)  # a count that fits neither one nor every head: refused before any work
    fit = sampling.draft_rule == "coupled" and sampling.head_temperature is None
    grid = [round(m * sampling.temperature, 6) for m in GRID] if fit else [None]
    orders = [DraftOrder(sampling if tau is None else replace(sampling, head_temperature=(tau,)), heads.num_heads,
                         heads.draft_vocab, loaded.device) for tau in grid]
    noise = KeyedNoise(sampling.seed, vocab, loaded.device)
    responses = rollout_answers(loaded, heads, prompt_ids, max_new_tokens, rollout, progress, sampling, answers)
    tables: list[list] = [[] for _ in grid]  # per grid point: each prompt's rank rows
    for ids, response in zip(tqdm(prompt_ids, desc="calibrate: head ranks", disable=not progress), responses):
        guesses = answer_guesses(loaded, heads, ids, response)
        for table, order in zip(tables, orders):
            table.append(ranks_of(guesses, heads, topk, order, noise))
    new_tokens = [len(r) for r in responses]
    meta = {
        "tool": f"treeopt {__version__}",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": loaded.name,
        "device": str(loaded.device),
        "dtype": dtype_name(loaded.dtype),
        "max_new_tokens": max_new_tokens,
        "prompts": len(prompt_ids),
        "rollout": rollout,
        "sampling": sampling.settings(),
        **(provenance or {}),
    }
    lengths = [len(ids) for ids in prompt_ids]
    stats = [CalibrationStats(heads.num_heads, topk, table, new_tokens, dict(meta), prompt_indices, lengths) for table in tables]
    if not fit:
        stats[0].provenance["drafts"] = sampling.draft_settings()
        return stats[0]
    return _fitted_stats(stats, grid, sampling)


def _fitted_stats(tables: list[CalibrationStats], grid: list[float], sampling: SamplingConfig) -> CalibrationStats:
    """The stats of the head temperatures fitted on these prompts (``tables[j]``: every head at ``grid[j]``), their
    fit recorded under ``provenance.drafts``; with too few prompts to hold any out, those of the sampling temperature,
    and a note saying so."""
    live = sum(1 for n in tables[0].new_tokens if n > 0)
    if live < MIN_PROMPTS:
        stats = tables[grid.index(round(sampling.temperature, 6))]
        stats.provenance["drafts"] = {**sampling.draft_settings(), "fit": None,
                                      "not_fitted": f"{live} prompts generated tokens; fitting needs >= {MIN_PROMPTS}"}
        return stats
    result = fit_head_temperatures(tables, grid)
    stats = combine(tables, [grid.index(tau) for tau in result.temperatures])
    taus = result.temperatures if result.per_head else result.temperatures[:1]
    stats.provenance["drafts"] = {**replace(sampling, head_temperature=tuple(taus)).draft_settings(), "fit": result.to_json()}
    return stats
