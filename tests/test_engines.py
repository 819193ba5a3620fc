"""Which releases run each export: the release line export prints, and docs/engines.md naming its sources."""

from pathlib import Path

from treeopt.engines import RELEASES, TRTLLM_LAST_RELEASE, release_note
from treeopt.formats import FORMATS

DOCS = Path(__file__).resolve().parent.parent / "docs" / "engines.md"


def test_every_tensorrt_llm_format_gets_the_release_line_and_the_others_none():
    for name, form in FORMATS.items():
        note = release_note(form.target)
        if form.target == "trtllm":
            assert note is not None and f"up to {TRTLLM_LAST_RELEASE}" in note and "\n" not in note, name
        else:
            assert note is None, name
    assert release_note("vllm") is None and release_note(None) is None


def test_docs_name_the_last_release_and_cite_its_sources():
    text = DOCS.read_text(encoding="utf-8")
    assert TRTLLM_LAST_RELEASE in text and "releases/tag/v1.3.0rc20" in text
    for pr in ("15763", "15767", "15907", "15918"):
        assert f"pull/{pr}" in text
    for engine in RELEASES.values():
        assert engine.engine in text
    for source in ("vllm/v1/spec_decode/medusa.py", "vllm/model_executor/models/medusa.py",
                   "vllm/transformers_utils/configs/medusa.py", "vllm/config/speculative.py"):
        assert source in text
