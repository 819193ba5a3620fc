"""The first N answers of an answers pack as a pack of their own (same meta, a note added), so that `train-heads
--answers` can train on part of the pack: train-heads uses every answer of the pack it is given, whatever --tokens.

    python experiments/answers_subset.py data/answers/smollm2-135m.npz 2048 runs/answers_2048.npz
"""

from __future__ import annotations

import sys
from pathlib import Path

from treeopt.answers import read_answers, write_answers


def main() -> None:
    src, n, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    pack = read_answers(src)
    meta = {k: v for k, v in pack.meta.items() if k not in ("format", "version", "answers", "answer_tokens")}
    meta["note"] = f"the first {n} answers of {src}" + (f" ({meta['note']})" if meta.get("note") else "")
    write_answers(pack.trajectories[:n], out, meta)
    sub = read_answers(out)
    print(f"{len(sub.trajectories)} answers ({sub.answer_tokens} answer tokens) of {len(pack.trajectories)} -> {out}")


if __name__ == "__main__":
    main()
