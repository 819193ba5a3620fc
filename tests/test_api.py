"""The Python API page (docs/api.md) runs as written, on a tiny model."""

import re
from pathlib import Path

import treeopt

PAGE = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def test_the_api_page_example_runs(tiny_folder, tmp_path, monkeypatch, capsys):
    code = re.search(r"```python\n(.*?)```", PAGE.read_text(), re.S).group(1)
    lines = code.splitlines()
    assert lines[0].startswith("MODEL, HEADS =") and lines[1].startswith("PROMPTS, CALIBRATE, MEASURE, NEW =")
    lines[0] = f"MODEL, HEADS = {str(tiny_folder / 'model')!r}, {str(tiny_folder / 'heads')!r}"
    lines[1] = f"PROMPTS, CALIBRATE, MEASURE, NEW = {str(tiny_folder / 'prompts.jsonl')!r}, '0:2', '2:4', 12"
    monkeypatch.chdir(tmp_path)
    exec(compile("\n".join(lines), str(PAGE), "exec"), {})
    printed = capsys.readouterr().out
    assert (tmp_path / "stats.json").exists()
    assert "speculative_config" in printed and "decoding_type: Medusa" in printed  # the export
    assert re.search(r"tokens/step, [0-9.]+x, identical 1.00", printed)  # lossless under sampling


def test_every_api_name_resolves_and_import_is_light():
    import subprocess
    import sys

    for name in treeopt.__all__:
        assert getattr(treeopt, name) is not None, name
    code = "import sys, treeopt; treeopt.build; treeopt.export_tree; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_the_api_and_the_cli_calibrate_with_the_same_rollout_by_default():
    import inspect

    from treeopt.calibration import ROLLOUTS, calibrate
    from treeopt.cli import calibrate as calibrate_command

    api = inspect.signature(calibrate).parameters["rollout"].default
    cli = inspect.signature(calibrate_command).parameters["rollout"].default.default
    assert api == cli == ROLLOUTS[0] == "batched"
