"""Reading every format with positions, and both chunking strategies, with the embedding model's own tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmstack.app.rag.chunking import ChunkConfig, Tokenizer, chunk_document
from fmstack.app.rag.loaders import Unreadable, parse_file
from fmstack.core.errors import InvalidRequest

from .helpers import HTML, JSONL, MARKDOWN, PDF_PAGES, pdf_bytes, shared_pool


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    spec = shared_pool().registry.get("all-minilm-l6-v2")
    return Tokenizer(spec.local_path(shared_pool().settings) / "tokenizer.json")


def test_markdown_blocks_have_heading_paths_and_offsets_into_the_file():
    parsed = parse_file(Path("kettle.md"), MARKDOWN.encode())
    assert parsed.title == "Kettle manual" and parsed.text == MARKDOWN
    by_text = {parsed.text[b.start : b.end]: b.heading for b in parsed.blocks}
    assert by_text["Descale the Zephyr kettle every month with white vinegar.\nRinse it twice afterwards."] == (
        "Kettle manual",
        "Cleaning",
    )
    assert by_text["Never open the lid while the water is boiling."] == ("Kettle manual", "Safety")


def test_markdown_code_fences_are_not_headings():
    text = "# Title\n\n```\n# not a heading\n\nstill code\n```\n\nAfter.\n"
    parsed = parse_file(Path("a.md"), text.encode())
    assert {b.heading for b in parsed.blocks} == {("Title",)}
    assert any("still code" in parsed.text[b.start : b.end] for b in parsed.blocks)


def test_html_drops_scripts_and_navigation_and_keeps_headings():
    parsed = parse_file(Path("l.html"), HTML.encode())
    assert parsed.title == "Lighthouse guide"
    assert "not text" not in parsed.text and "Home | About" not in parsed.text and "Copyright" not in parsed.text
    blocks = {parsed.text[b.start : b.end]: b.heading for b in parsed.blocks}
    assert blocks["Lighthouse keepers trimmed the wicks every four hours."] == ("Lighthouses", "Keepers")


def test_pdf_blocks_know_their_page():
    parsed = parse_file(Path("r.pdf"), pdf_bytes(PDF_PAGES, title="Report"))
    assert parsed.title == "Report" and parsed.meta["pages"] == 2
    pages = {b.page for b in parsed.blocks if "Vatnajokull" in parsed.text[b.start : b.end]}
    assert pages == {2}


def test_jsonl_records_keep_their_line_and_fields():
    parsed = parse_file(Path("o.jsonl"), JSONL.encode())
    assert [b.line for b in parsed.blocks] == [1, 2, 3]
    assert parsed.blocks[2].meta == {"team": "logistics", "year": 2023}
    assert parsed.text[parsed.blocks[1].start : parsed.blocks[1].end].startswith("Invoice 77")


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("broken.pdf", b"%PDF-1.4\nthis is not a pdf at all", "PDF"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), "not UTF-8"),
        ("bad.jsonl", b'{"text": "ok"}\n{not json\n', "line 2"),
        ("image.png", b"\x89PNG", "unsupported file type"),
        ("empty.html", b"<html><body><script>x</script></body></html>", "no visible text"),
    ],
)
def test_unreadable_files_say_why(name, data, reason):
    with pytest.raises(Unreadable, match=reason):
        parse_file(Path(name), data)


def test_token_chunks_are_exact_spans_with_overlap(tokenizer):
    text = " ".join(f"word{i} is here." for i in range(400))
    parsed = parse_file(Path("long.txt"), text.encode())
    chunks = chunk_document(parsed, ChunkConfig(chunk_tokens=64, overlap=16, by="tokens"), tokenizer)
    assert len(chunks) > 5
    for c in chunks:
        assert c.text == parsed.text[c.start : c.end]
        assert c.tokens <= 64 and len(tokenizer.offsets(c.text)) <= 64
        assert c.heading == ("long",)  # a text file's title is its name
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start < a.end  # consecutive windows overlap
        shared = tokenizer.offsets(parsed.text[b.start : a.end])
        assert abs(len(shared) - 16) <= 1
    assert chunks[-1].end == len(parsed.text.rstrip())


def test_structure_chunks_follow_sections_and_split_long_paragraphs_at_sentences(tokenizer):
    long_para = " ".join(f"Sentence number {i} talks about kettles." for i in range(60))
    md = f"# Manual\n\nShort intro.\n\n## Long\n\n{long_para}\n\n## End\n\nLast words.\n"
    parsed = parse_file(Path("m.md"), md.encode())
    chunks = chunk_document(parsed, ChunkConfig(chunk_tokens=80, overlap=0, by="structure"), tokenizer)
    assert chunks[0].text == "Short intro." and chunks[0].heading == ("Manual",)
    long_chunks = [c for c in chunks if c.heading == ("Manual", "Long")]
    assert len(long_chunks) >= 3
    assert all(c.text.endswith("kettles.") and c.tokens <= 80 for c in long_chunks)  # cut at sentence ends
    assert chunks[-1].text == "Last words." and chunks[-1].heading == ("Manual", "End")
    assert all(c.text == parsed.text[c.start : c.end] for c in chunks)


def test_structure_chunks_never_span_pdf_pages(tokenizer):
    parsed = parse_file(Path("r.pdf"), pdf_bytes(PDF_PAGES))
    chunks = chunk_document(parsed, ChunkConfig(chunk_tokens=200, by="structure"), tokenizer)
    assert [(c.page, c.page_end) for c in chunks] == [(1, 1), (2, 2)]


def test_chunk_settings_are_checked():
    with pytest.raises(InvalidRequest, match="--chunk-tokens"):
        ChunkConfig(chunk_tokens=1000).check(222)
    with pytest.raises(InvalidRequest, match="--overlap"):
        ChunkConfig(chunk_tokens=100, overlap=90).check(222)
    with pytest.raises(InvalidRequest, match="--by"):
        ChunkConfig(by="pages").check(222)
