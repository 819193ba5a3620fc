"""The tools in scripts/ run: --help, and a smoke run on tiny inputs (the real runs are in docs/)."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from treeopt.stats import CalibrationStats

ROOT = Path(__file__).resolve().parent.parent


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=ROOT, timeout=600, **kwargs)


@pytest.mark.parametrize("tool", ["scripts/split_study.py", "scripts/verify_kernels.py"])
def test_python_tools_have_help(tool):
    r = run(sys.executable, tool, "--help")
    assert r.returncode == 0 and "usage" in r.stdout


def test_gpu_check_has_help():
    r = run("bash", "scripts/gpu_check.sh", "--help")
    assert r.returncode == 0 and "GPU check" in r.stdout and "PREV_HEADS" in r.stdout


def test_split_study_on_tiny_stats(tmp_path):
    """Three calibrations of disjoint prompts, pooled and split at random: one row per budget, then one JSON line."""
    rng = random.Random(0)
    files = []
    for part, select in enumerate(["0:24:2", "1:24:4", "3:24:4"]):
        count = len(range(24)[slice(*map(int, select.split(":")))])
        rollouts = [[[rng.choice([-1, 0, 0, 1]), rng.choice([-1, 0, 1])] for _ in range(20)] for _ in range(count)]
        stats = CalibrationStats(2, 2, rollouts, [20] * count, {"prompt_source": "mt-bench", "select": select})
        stats.save(tmp_path / f"s{part}.json")
        files.append(tmp_path / f"s{part}.json")
    r = run(sys.executable, "scripts/split_study.py", *files, "--budgets", "1,3", "--splits", 5, "--calibrate", 12,
            "--bench", 6, "--fixed", "0:24:2/1:24:4", "--out", tmp_path / "study.json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["prompts"] == 24 and set(summary["summary"]) == {"1", "3"} and summary["fixed"] is not None
    assert len(json.loads((tmp_path / "study.json").read_text())["per_split"]) == 5
    # pools calibrated at other sampling settings are refused
    other = CalibrationStats(2, 2, [[[0, 0]] * 20], [20], {"prompt_source": "mt-bench", "select": "5:6",
                                                             "sampling": {"temperature": 0.7, "top_k": 0, "top_p": 1.0, "seed": 0}})
    other.save(tmp_path / "other.json")
    r = run(sys.executable, "scripts/split_study.py", files[0], tmp_path / "other.json", "--splits", 1)
    assert r.returncode != 0 and "same sampling settings" in r.stderr


def test_verify_kernels_on_a_tiny_model(tiny_folder):
    r = run(sys.executable, "scripts/verify_kernels.py", "--model", tiny_folder / "model", "--heads", tiny_folder / "heads",
            "--sizes", "1,3", "--rounds", 2, "--tables", "stock;measured", "--context", 16)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(result["median_ms"]["stock"]) == {"1", "3"} and all(v > 0 for v in result["median_ms"]["stock"].values())
