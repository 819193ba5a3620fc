"""What a ``train-heads`` run is: its settings, their defaults (the CLI's too) and their checks. No torch
at import, so the CLI can read the defaults without loading it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TRAIN_TARGETS = ("greedy", "distribution")


class TrainError(ValueError):
    pass


@dataclass
class TrainConfig:
    num_heads: int = 4
    num_layers: int = 1
    shared_lm_head: bool = True
    kind: str = "plain"  # plain | root-conditioned (heads also read the root token) | sequential (and the draft tokens
    # earlier on their path): see medusa_runtime/heads.py
    answers: str = ""  # an answers pack (treeopt/answers.py) to start from instead of generating those answers again
    init_from: str = ""  # heads folder to start from (same sizes): its ResBlocks, root projections and draft vocabulary;
    # what it lacks (a sequential head's path projections) starts at zero, so training starts from its guesses
    tokens: int = 320_000  # response tokens of self-distillation data to generate / use
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 256
    head_decay: float = 0.8  # loss weight of head k is decay**k, as the later upstream recipe
    target: str = "greedy"  # greedy: cross-entropy to the base model's argmax | distribution: KL to its whole
    # distribution over the softmax's tokens (Hydra++'s teacher loss; needs the shared lm_head)
    max_new_tokens: int = 128
    max_prompt_tokens: int = 128  # longer prompts are skipped: prompt tokens cost generation time, not data
    prompts: int = 12000  # training prompts considered (first N of a fixed shuffle)
    gen_batch_size: int = 128  # prompts answered together (128 measured fastest on a 2-core CPU)
    gen_temperature: float = 0.0  # 0: greedy answers; > 0: answers sampled at this temperature with the runtime's
    # keyed draws (seed ``seed``), so heads learn the contexts sampled decoding shows them (docs/heads.md)
    gen_dtype: str = ""  # dtype of the model that writes the answers ("": the training model's own). Another
    # dtype (bfloat16: ~1.7x faster on a CPU with AVX512-BF16) only writes the text; targets are then the
    # training model's own argmax at each position, so heads still learn exactly what verification accepts
    eval_fraction: float = 0.05
    seed: int = 0
    draft_vocab: int = 4096  # guesses come from the N most frequent answer tokens (0: whole vocabulary); with a
    # shared lm_head the training softmax then runs over exactly those tokens, the competition the runtime holds
    prefix_attention: bool = False  # Hydra++: the heads read a causal attention layer over the answer's hidden states
    # (medusa_runtime/prefix.py), trained with them on whole answers
    context_lookup: bool = True  # the heads' config asks the runtime to put a token copied from the text first in each
    # node's ranking (medusa_runtime/lookup.py, its default match lengths); training itself does not see it
    save_dtype: str = "float16"  # weights are rounded to this before evaluation and stored in it (float32: as trained)

    def validate(self) -> None:
        from medusa_runtime.checkpoint import HEAD_KINDS  # here, not at import: the CLI reads the defaults without torch
        from medusa_runtime.models import DTYPES

        if self.kind not in HEAD_KINDS:
            raise TrainError(f"--kind {self.kind!r}: use one of {', '.join(HEAD_KINDS)}")
        if self.answers and not Path(self.answers).is_file():
            raise TrainError(f"--answers {self.answers}: no such file; pass a pack written by 'treeopt pack-answers', or none")
        if self.init_from and not Path(self.init_from).is_dir():
            raise TrainError(f"--init-from {self.init_from}: no such heads folder")
        if self.target not in TRAIN_TARGETS:
            raise TrainError(f"--target {self.target!r}: use one of {', '.join(TRAIN_TARGETS)}")
        if self.target == "distribution" and not self.shared_lm_head:
            raise TrainError("--target distribution needs --shared-lm-head: the teacher's distribution is read through the "
                             "base lm_head, which v1 heads (--own-lm-head) do not share")
        if self.num_heads < 1:
            raise TrainError(f"--num-heads {self.num_heads}: need at least 1 head")
        if self.num_layers < 0:
            raise TrainError(f"--num-layers {self.num_layers}: cannot be negative")
        if self.draft_vocab < 0:
            raise TrainError(f"--draft-vocab {self.draft_vocab}: must be >= 0 (0: guess from the whole vocabulary)")
        if self.save_dtype not in DTYPES:
            raise TrainError(f"--save-dtype {self.save_dtype!r}: use one of {', '.join(DTYPES)}")
        if self.gen_temperature < 0:
            raise TrainError(f"--gen-temperature {self.gen_temperature}: must be >= 0 (0: greedy answers)")
        if self.gen_dtype and self.gen_dtype not in DTYPES:
            raise TrainError(f"--gen-dtype {self.gen_dtype!r}: use one of {', '.join(DTYPES)} (or leave it empty)")
        if min(self.epochs, self.batch_size, self.tokens, self.gen_batch_size, self.max_new_tokens, self.prompts) < 1:
            raise TrainError("--epochs, --batch-size, --gen-batch-size, --max-new-tokens, --tokens and --num-prompts must be positive")
