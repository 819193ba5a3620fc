"""Answer packs: compact round trip, strict reading, and seeding train-heads' resumable answer file."""

import json

import numpy as np
import pytest

from treeopt.answers import AnswersError, check_answers_fit, read_answers, seed_answers, write_answers
from treeopt.distill import Trajectory, read_trajectories

META = {"model": "smollm2-135m", "gen_dtype": "bfloat16", "max_new_tokens": 128}
ANSWERS = [Trajectory([1, 2, 3], [40000, 5, 6]), Trajectory([7], [8]), Trajectory([9, 10], [])]


def test_round_trip_is_exact_and_compact(tmp_path):
    path = write_answers(ANSWERS, tmp_path / "a.npz", META)
    pack = read_answers(path)
    assert pack.trajectories == ANSWERS and pack.answer_tokens == 4
    assert pack.meta["answers"] == 3 and pack.meta["model"] == "smollm2-135m"
    with np.load(path) as raw:
        assert raw["tokens"].dtype == np.uint16  # ids below 65536: two bytes each
    big = write_answers([Trajectory([70000], [1])], tmp_path / "b.npz", META)
    assert read_answers(big).trajectories == [Trajectory([70000], [1])]


def test_defects_are_named(tmp_path):
    with pytest.raises(AnswersError, match="no such file"):
        read_answers(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(AnswersError, match="not a readable .npz"):
        read_answers(tmp_path / "junk.npz")
    np.savez(tmp_path / "short.npz", tokens=np.zeros(3, np.uint16))
    with pytest.raises(AnswersError, match="'prompt_lengths' is missing"):
        read_answers(tmp_path / "short.npz")
    path = write_answers(ANSWERS, tmp_path / "a.npz", META)
    with np.load(path) as raw:
        arrays = dict(raw)
    np.savez(tmp_path / "cut.npz", **{**arrays, "tokens": arrays["tokens"][:-1]})
    with pytest.raises(AnswersError, match="do not add up"):
        read_answers(tmp_path / "cut.npz")
    np.savez(tmp_path / "fmt.npz", **{**arrays, "meta": np.asarray(json.dumps({"format": "other"}))})
    with pytest.raises(AnswersError, match="'format' and 'version'"):
        read_answers(tmp_path / "fmt.npz")
    with pytest.raises(AnswersError, match="needs 'gen_dtype'"):
        write_answers(ANSWERS, tmp_path / "x.npz", {"model": "m", "max_new_tokens": 1})


def test_answers_of_another_setting_are_refused(tmp_path):
    pack = read_answers(write_answers(ANSWERS, tmp_path / "a.npz", META))
    check_answers_fit(pack, tmp_path / "a.npz", "smollm2-135m", "bfloat16", 128)
    with pytest.raises(AnswersError, match=r"gen_dtype 'bfloat16' \(this run: 'float32'; --gen-dtype\)"):
        check_answers_fit(pack, tmp_path / "a.npz", "smollm2-135m", "float32", 128)
    with pytest.raises(AnswersError, match="--max-new-tokens"):
        check_answers_fit(pack, tmp_path / "a.npz", "smollm2-135m", "bfloat16", 64)


def test_seeding_appends_only_what_the_answer_file_lacks(tmp_path):
    pack = read_answers(write_answers(ANSWERS, tmp_path / "a.npz", META))
    jsonl = tmp_path / "work" / "trajectories.jsonl"
    jsonl.parent.mkdir()
    jsonl.write_text(json.dumps({"prompt_ids": [7], "response_ids": [8]}) + "\n" + '{"prompt_ids": [1')  # a killed run's tail
    assert seed_answers(pack, jsonl) == 2
    assert read_trajectories(jsonl) == [ANSWERS[1], ANSWERS[0], ANSWERS[2]]
    assert seed_answers(pack, jsonl) == 0


def test_auto_is_the_shipped_pack_only_when_the_settings_fit():
    from treeopt.answers import SHIPPED, resolve_answers

    assert resolve_answers("auto", "smollm2-135m", "bfloat16", 128) == str(SHIPPED["smollm2-135m"])
    assert SHIPPED["smollm2-135m"].exists()  # the pack ships with the repository
    assert resolve_answers("auto", "smollm2-135m", "float32", 128) == ""
    assert resolve_answers("auto", "other-model", "bfloat16", 128) == ""
    assert resolve_answers("none", "smollm2-135m", "bfloat16", 128) == ""
    assert resolve_answers("x.npz", "smollm2-135m", "bfloat16", 128) == "x.npz"
    pack = read_answers(SHIPPED["smollm2-135m"])
    assert pack.meta["gen_dtype"] == "bfloat16" and pack.meta["max_new_tokens"] == 128 and len(pack.trajectories) >= 3072



def test_a_pack_fits_only_runs_at_its_temperature(tmp_path):
    """Sampled answers (meta "sampling" at temperature > 0) seed only a run sampling at that temperature, and greedy
    ones only a greedy run: either would otherwise teach the heads the other text's contexts without a word."""
    from treeopt.answers import SHIPPED, pack_temperature, resolve_answers

    sampled = {**META, "sampling": {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 1}}
    assert pack_temperature(META) == 0 and pack_temperature({**META, "sampling": {"temperature": 0.0}}) == 0
    assert pack_temperature(sampled) == 1.0
    pack = read_answers(write_answers(ANSWERS, tmp_path / "s.npz", sampled))
    check_answers_fit(pack, tmp_path / "s.npz", "smollm2-135m", "bfloat16", 128, gen_temperature=1.0)
    with pytest.raises(AnswersError, match=r"gen_temperature 1.0 \(this run: 0.0; --gen-temperature\)"):
        check_answers_fit(pack, tmp_path / "s.npz", "smollm2-135m", "bfloat16", 128)
    greedy = read_answers(write_answers(ANSWERS, tmp_path / "g.npz", META))
    with pytest.raises(AnswersError, match=r"gen_temperature 0.0 \(this run: 0.7; --gen-temperature\)"):
        check_answers_fit(greedy, tmp_path / "g.npz", "smollm2-135m", "bfloat16", 128, gen_temperature=0.7)
    assert resolve_answers("auto", "smollm2-135m", "bfloat16", 128) == str(SHIPPED["smollm2-135m"])
    assert resolve_answers("auto", "smollm2-135m", "bfloat16", 128, gen_temperature=1.0) == ""  # the shipped pack is greedy
