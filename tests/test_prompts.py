import json

import pytest

from medusa_runtime.prompts import parse_select, read_json_array_tolerant, read_jsonl_prompts, render_chat, load_prompts

from conftest import tiny_tokenizer


def test_tolerant_reader_recovers_complete_records(tmp_path):
    records = [{"id": str(i), "conversations": [{"from": "human", "value": f"q{i}"}]} for i in range(5)]
    text = json.dumps(records, indent=2)
    cut = text.index('"id": "4"') + 5  # truncate inside the last record
    path = tmp_path / "trunc.json"
    path.write_text(text[:cut])
    read = read_json_array_tolerant(path)
    assert [r["id"] for r in read.records] == ["0", "1", "2", "3"]
    assert read.trailing_chars > 0
    path.write_text(text)
    full = read_json_array_tolerant(path)
    assert len(full.records) == 5 and full.trailing_chars == 0


@pytest.mark.parametrize("text, expected", [("0:4", slice(0, 4)), ("1:80:4", slice(1, 80, 4)), (":3", slice(None, 3)), (None, slice(None))])
def test_parse_select(text, expected):
    assert parse_select(text) == expected


@pytest.mark.parametrize("text", ["3", "a:b", "1:2:0", "1:2:3:4"])
def test_parse_select_errors(text):
    with pytest.raises(ValueError, match="--select"):
        parse_select(text)


def test_jsonl_prompts_and_errors(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n')
    assert read_jsonl_prompts(good) == ["a", "b"]
    assert load_prompts(str(good)) == ["a", "b"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: missing string field 'prompt'"):
        read_jsonl_prompts(bad)
    with pytest.raises(ValueError, match="--prompts"):
        load_prompts("no-such-source")


def test_packaged_sources_have_the_expected_sizes():
    assert len(load_prompts("mt-bench")) == 80
    assert len(load_prompts("humaneval")) == 164


def test_chat_template_is_applied():
    assert render_chat(tiny_tokenizer(), "w1 w2") == [2, 5, 6, 3]
