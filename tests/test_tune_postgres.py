"""One tuning run against a real PostgreSQL server (started by .ci/run; URL in TREEOPT_TEST_POSTGRES_URL)."""

import os

import optuna
import pytest

from conftest import loaded_tiny, tiny_model, trained_tiny_heads
from treeopt.calibration import calibrate
from treeopt.tune import TuneSpace, best_tree, run_study

URL = os.environ.get("TREEOPT_TEST_POSTGRES_URL")
if URL is None and os.environ.get("CI"):
    raise RuntimeError("CI must provide TREEOPT_TEST_POSTGRES_URL (.ci/run starts PostgreSQL)")


@pytest.mark.skipif(URL is None, reason="no PostgreSQL server: set TREEOPT_TEST_POSTGRES_URL (CI does)")
def test_study_on_postgresql(tmp_path):
    model = tiny_model("llama")
    heads = trained_tiny_heads(model, work=tmp_path)
    loaded = loaded_tiny(model)
    prompts = [[5, 9, 13], [6, 10, 14]]
    stats = calibrate(loaded, heads, prompts, 16, 4, progress=False)
    name = f"pg-{os.getpid()}"
    study = run_study(loaded, heads, stats, prompts, trials=3, storage=URL, study_name=name, max_new_tokens=8,
                      space=TuneSpace(max_budget=4))
    assert len(optuna.load_study(study_name=name, storage=URL).trials) >= 3
    assert best_tree(study).paths
    optuna.delete_study(study_name=name, storage=URL)
