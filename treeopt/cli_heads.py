"""The ``treeopt`` commands about the heads themselves: ``pack-answers`` (self-distilled answers as token ids),
``train-heads`` (Medusa-1 self-distillation), ``mix-heads`` (two sets mixed weight by weight) and ``export-heads``
(an engine's checkpoint). ``cli.py`` registers them on the app; like every command, each parses its options, calls
one function and prints.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .cli_inputs import DeviceOpt, DtypeOpt, ModelOpt, command_line, fail, load_everything
from .train_config import TrainConfig, TrainError


def pack_answers_cmd(
    source: Path = typer.Argument(..., help="a train-heads --out folder (its .work/trajectories.jsonl) or such a JSONL file"),
    out: Path = typer.Option(..., "--out", help=".npz to write (e.g. data/answers/smollm2-135m.npz)"),
    model: str = ModelOpt,
    gen_dtype: str = typer.Option(..., "--gen-dtype", help="dtype that wrote the answers (what train-heads was given)"),
    max_new_tokens: int = typer.Option(TrainConfig.max_new_tokens, "--max-new-tokens", help="the answer length limit they were written with"),
    gen_temperature: float = typer.Option(0.0, "--gen-temperature", help="the temperature they were sampled at (0: greedy; what train-heads was given)"),
    source_note: str = typer.Option("", "--note", help="where the prompts came from, kept in the pack's meta"),
):
    """Pack self-distilled answers as compact token ids, so that train-heads (--answers) starts from them."""
    from .answers import write_answers
    from .distill import read_trajectories

    jsonl = source / ".work" / "trajectories.jsonl" if source.is_dir() else source
    if not jsonl.is_file():
        fail(f"{jsonl}: no such file; pass a train-heads --out folder or its trajectories.jsonl")
    try:
        trajectories = read_trajectories(jsonl)
    except ValueError as err:
        fail(str(err))
    if not trajectories:
        fail(f"{jsonl}: holds no answers yet")
    meta = {"model": model, "gen_dtype": gen_dtype, "max_new_tokens": max_new_tokens, "note": source_note}
    if gen_temperature > 0:  # train-heads --answers then seeds only runs that sample at this temperature
        meta["sampling"] = {"temperature": gen_temperature}
    write_answers(trajectories, out, meta)
    tokens = sum(len(t.response_ids) for t in trajectories)
    typer.echo(f"{len(trajectories)} answers ({tokens} answer tokens) packed into {out} ({out.stat().st_size / 1e6:.2f} MB)")


def train_heads_cmd(
    out: Path = typer.Option(..., "--out", help="output folder (upstream Medusa checkpoint format)"),
    model: str = ModelOpt,
    data: str = typer.Option("sharegpt", "--data", help="sharegpt | FILE.jsonl of {\"prompt\": ...} or {\"text\": ...} rows"),
    num_heads: int = typer.Option(TrainConfig.num_heads, "--num-heads"),
    num_layers: int = typer.Option(TrainConfig.num_layers, "--num-layers", help="ResBlocks per head"),
    shared_lm_head: bool = typer.Option(TrainConfig.shared_lm_head, "--shared-lm-head/--own-lm-head", help="v2 (reuse the base lm_head) or v1"),
    kind: str = typer.Option(TrainConfig.kind, "--kind", help="plain (upstream Medusa heads) | root-conditioned (heads also read the root "
                             "token) | sequential (and the draft tokens earlier on their path); the last two extend the format"),
    answers: str = typer.Option("auto", "--answers", help="answers pack to start from instead of generating them (auto: the "
                                "shipped pack of the default model when --gen-dtype bfloat16 and --max-new-tokens 128 fit it; none)"),
    init_from: str = typer.Option("", "--init-from", help="heads folder to start from (same sizes; e.g. the shipped heads): "
                                  "its weights and draft vocabulary, new tensors at zero"),
    tokens: int = typer.Option(TrainConfig.tokens, "--tokens", help="response tokens of self-distillation data"),
    epochs: int = typer.Option(TrainConfig.epochs, "--epochs"),
    target: str = typer.Option(TrainConfig.target, "--target", help="greedy (cross-entropy to the base model's argmax) | "
                               "distribution (KL to its whole distribution over the guessable tokens: Hydra++'s teacher loss)"),
    lr: float = typer.Option(TrainConfig.lr, "--lr"),
    batch_size: int = typer.Option(TrainConfig.batch_size, "--batch-size", help="training positions per step"),
    gen_batch_size: int = typer.Option(TrainConfig.gen_batch_size, "--gen-batch-size", help="prompts answered together while generating data"),
    gen_temperature: float = typer.Option(TrainConfig.gen_temperature, "--gen-temperature", help="0: greedy answers; > 0: answers "
                                          "sampled at this temperature (the runtime's keyed draws), for heads that serve sampled decoding"),
    gen_dtype: str = typer.Option(TrainConfig.gen_dtype, "--gen-dtype", help="dtype that writes the answers (bfloat16: faster on CPUs with AVX512-BF16; "
                                  "targets stay the training dtype's own argmax)"),
    max_new_tokens: int = typer.Option(TrainConfig.max_new_tokens, "--max-new-tokens", help="length of each generated answer"),
    max_prompt_tokens: int = typer.Option(TrainConfig.max_prompt_tokens, "--max-prompt-tokens", help="skip longer prompts"),
    num_prompts: int = typer.Option(TrainConfig.prompts, "--num-prompts", help="prompts drawn (a fixed shuffle) to answer; "
                                    "answers stop at --tokens or when every drawn prompt is answered"),
    mtbench_select: str = typer.Option("0:80", "--mtbench-select", help="MT-Bench prompts for the accuracy report ('' to skip)"),
    draft_vocab: int = typer.Option(TrainConfig.draft_vocab, "--draft-vocab", help="guess only from the N most frequent answer tokens (0: whole vocabulary)"),
    save_dtype: str = typer.Option(TrainConfig.save_dtype, "--save-dtype", help="dtype the weights are stored in (and evaluated at)"),
    context_lookup: bool = typer.Option(TrainConfig.context_lookup, "--context-lookup/--no-context-lookup", help="write heads whose "
                                        "guesses start with a token copied from the text (runtime prompt lookup; engines do not do it)"),
    prefix_attention: bool = typer.Option(TrainConfig.prefix_attention, "--prefix-attention/--no-prefix-attention", help="heads read one "
                                          "causal attention layer over the answer's hidden states (Hydra++; trained on whole answers)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace heads already in --out"),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
):
    """Train Medusa-1 heads by self-distillation (base frozen) and write them with a README of figures."""
    from .answers import AnswersError, resolve_answers
    from .train_heads import run_train_heads

    cfg = TrainConfig(num_heads=num_heads, num_layers=num_layers, shared_lm_head=shared_lm_head, kind=kind, init_from=init_from, tokens=tokens,
                      answers=resolve_answers(answers, model, gen_dtype, max_new_tokens, gen_temperature), gen_temperature=gen_temperature,
                      epochs=epochs, target=target, lr=lr, batch_size=batch_size, gen_batch_size=gen_batch_size, gen_dtype=gen_dtype,
                      draft_vocab=draft_vocab, save_dtype=save_dtype, context_lookup=context_lookup, prefix_attention=prefix_attention,
                      max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens, prompts=num_prompts)
    try:
        cfg.validate()
    except TrainError as err:
        fail(str(err))
    loaded, _, _ = load_everything(model, "none", dtype, device)
    try:
        result = run_train_heads(loaded, data, cfg, out, overwrite, command_line(), mtbench_select or None)
    except (TrainError, AnswersError) as err:
        fail(str(err))
    for name in ("held_out", "mtbench"):
        if result[name]:
            typer.echo(f"{name}: top-1 per head " + " ".join(f"{a:.3f}" for a in result[name]["top1"]))
    typer.echo(f"heads written to {out} (see {out}/README.md)")


def mix_heads_cmd(
    a: Path = typer.Argument(..., help="heads folder A (e.g. greedy-trained heads)"),
    b: Path = typer.Argument(..., help="heads folder B of the same architecture (e.g. A fine-tuned on sampled text)"),
    weight: float = typer.Option(..., "--weight", help="B's share: writes (1 - W) x A + W x B"),
    out: Path = typer.Option(..., "--out", help="heads folder to write"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace heads already in --out"),
):
    """Mix two heads sets weight by weight (weight-space interpolation, as WiSE-FT); measure the mix before using it."""
    from medusa_runtime.checkpoint import HeadsFormatError

    from .mix_heads import MixError, mix_heads

    try:
        mixed = mix_heads(a, b, weight, out, command_line(), overwrite)
    except (MixError, HeadsFormatError) as err:
        fail(str(err))
    typer.echo(f"{mixed.tensors} tensors ({mixed.parameters} parameters) mixed as {1 - weight:g} x {a} + {weight:g} x {b}, "
               f"written to {out}")


def export_heads(
    heads: Path = typer.Argument(..., help="Medusa heads folder (plain heads)"),
    fmt: str = typer.Option("vllm", "--format", help="vllm: the checkpoint vLLM's Medusa model loads"),
    out: Path = typer.Option(..., "--out", help="folder to write (config.json, model.safetensors); nothing on error"),
    model: str = ModelOpt,
):
    """Write plain heads as an engine's checkpoint: vLLM's config fields and weight names, a draft vocabulary as its
    token_map; heads it cannot run (sequential, root-conditioned, context lookup, prefix attention) are refused."""
    from medusa_runtime.heads import EngineError

    from .vllm import VLLM_TARGET, vllm_checkpoint, write_vllm_checkpoint

    if fmt != VLLM_TARGET:
        fail(f"--format {fmt!r}: use vllm (upstream Medusa and TensorRT-LLM read the heads folder as it is)")
    loaded, medusa_heads, _ = load_everything(model, str(heads), "float32", "cpu", need_heads=True)
    try:
        checkpoint = vllm_checkpoint(medusa_heads, loaded.model.get_output_embeddings().weight, str(heads))
        write_vllm_checkpoint(checkpoint, out)
    except EngineError as err:
        fail(str(err))
    except OSError as err:
        fail(f"{out}: cannot be written ({err.strerror or err.__class__.__name__}); choose another folder")
    config = checkpoint.config
    typer.echo(f"vllm: {config['num_heads']} heads ({config['truncated_vocab_size']} of {config['vocab_size']} tokens) "
               f"written to {out}; export a chain for them with 'treeopt export TREE --format vllm --heads-dir {out}'")
