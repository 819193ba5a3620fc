"""How do the training answers differ from MT-Bench's? Prompt lengths and repetition, from two trajectory files.

Prints, for each file, the median prompt and answer length in tokens, how many prompts exceed 128 tokens, and the
fraction of each answer's 4-grams that repeat an earlier 4-gram of the same answer (mean over answers), then one
JSON line. Reads only token ids: no model.

    python experiments/answer_stats.py runs/heads_seq2/.work/trajectories.jsonl runs/heads_seq2/.work/mtbench_trajectories.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from treeopt.distill import read_trajectories


def repeated_ngram_fraction(ids: list[int], n: int = 4) -> float:
    """Share of the n-grams of ``ids`` that already occurred earlier in ``ids`` (0 for fewer than n tokens)."""
    seen, repeats = set(), 0
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams) if grams else 0.0


def describe(path: Path) -> dict:
    answers = read_trajectories(path)
    return {"answers": len(answers),
            "median_prompt_tokens": statistics.median(len(a.prompt_ids) for a in answers),
            "prompts_over_128": sum(len(a.prompt_ids) > 128 for a in answers),
            "median_answer_tokens": statistics.median(len(a.response_ids) for a in answers),
            "repeated_4gram_fraction": round(statistics.mean(repeated_ngram_fraction(a.response_ids) for a in answers), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, nargs="+", help="trajectories.jsonl files (train-heads' .work folder)")
    rows = {str(f): describe(f) for f in parser.parse_args().files}
    print(f"{'file':<55} {'answers':>7} {'prompt':>6} {'>128':>5} {'answer':>6} {'rep. 4-grams':>12}")
    for name, r in rows.items():
        print(f"{name:<55} {r['answers']:>7} {r['median_prompt_tokens']:>6} {r['prompts_over_128']:>5} "
              f"{r['median_answer_tokens']:>6} {r['repeated_4gram_fraction']:>12.3f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
