"""Ingestion into a real SQLite store with the real MiniLM model: every format, broken files, incremental updates."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from fmstack.app.rag import ChunkConfig, Filters
from fmstack.app.rag.index import VectorIndex
from fmstack.core.store.schema import RagChunk, RagDocument

from .helpers import make_rag, write_formats

pytestmark = pytest.mark.slow  # loads the embedding model


def chunk_rows(rag, name: str = "docs") -> list[tuple]:
    with rag.sessions() as s:
        return s.execute(
            select(RagDocument.source, RagChunk.sha256, RagChunk.id).join(RagDocument).order_by(RagChunk.id)
        ).all()


def test_every_format_is_ingested_and_searchable(tmp_path):
    files = write_formats(tmp_path / "docs")
    rag = make_rag(tmp_path / "home")
    report = rag.ingest(tmp_path / "docs", "docs", ChunkConfig(by="structure"))
    assert report.skipped == [] and report.added == 5
    assert report.chunks_embedded == report.chunks_added == report.chunks_total
    sources = {src for src, _, _ in chunk_rows(rag)}
    assert sources == {f"docs/{p.name}" for p in files.values()}
    expectations = {
        "How often should the kettle be descaled?": ("docs/kettle.md", "Kettle manual > Cleaning"),
        "Who invented the Fresnel lens?": ("docs/lighthouse.html", "Lighthouses"),
        "Where did order 1002 ship to?": ("docs/orders.jsonl", None),
        "How many columns does the Giant's Causeway have?": ("docs/basalt.txt", "basalt"),
        "Which ice cave will the new route visit?": ("docs/report.pdf", "Glacier Tours report"),
    }
    for question, (source, heading) in expectations.items():
        top = rag.search("docs", question, top_k=1)[0]
        assert top.source == source, (question, top)
        assert top.heading == heading
    pdf_hit = rag.search("docs", "Which ice cave will the new route visit?", top_k=1)[0]
    assert pdf_hit.page == 2 and "page 2" in pdf_hit.location()
    jsonl_hit = rag.search("docs", "Where did order 1002 ship to?", top_k=1)[0]
    assert jsonl_hit.line == 3 and jsonl_hit.meta["team"] == "logistics"


def test_a_broken_pdf_is_reported_and_skipped_and_the_rest_goes_on(tmp_path):
    folder = tmp_path / "docs"
    write_formats(folder)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    (folder / "picture.png").write_bytes(b"\x89PNG\r\n")
    rag = make_rag(tmp_path / "home")
    report = rag.ingest(folder, "docs")
    skipped = dict(report.skipped)
    assert set(skipped) == {"docs/broken.pdf", "docs/picture.png"}
    assert "PDF" in skipped["docs/broken.pdf"] and "unsupported" in skipped["docs/picture.png"]
    assert report.added == 5  # everything else went in


def test_reingest_embeds_only_what_changed_and_removes_deleted_files(tmp_path):
    folder = tmp_path / "docs"
    files = write_formats(folder)
    long = folder / "long.md"
    sections = [f"## Part {i}\n\n" + " ".join(f"Fact {i}.{j} about glaciers." for j in range(40)) for i in range(6)]
    long.write_text("# Glaciers\n\n" + "\n\n".join(sections) + "\n")
    rag = make_rag(tmp_path / "home")
    config = ChunkConfig(chunk_tokens=100, by="structure")
    first = rag.ingest(folder, "docs", config)
    before = chunk_rows(rag)
    assert first.chunks_embedded == len(before)

    # Unchanged: nothing is parsed, embedded or written.
    again = rag.ingest(folder, "docs", config)
    assert (again.unchanged, again.chunks_embedded, again.chunks_added) == (6, 0, 0)
    assert chunk_rows(rag) == before

    # Edit one section of one file, delete another file.
    long.write_text(long.read_text().replace("Fact 3.5 about glaciers.", "Fact 3.5 was rewritten entirely."))
    files["txt"].unlink()
    third = rag.ingest(folder, "docs", config)
    assert (third.updated, third.removed, third.unchanged) == (1, 1, 4)
    assert third.chunks_embedded == 1  # only the chunk holding the edited sentence
    assert third.chunks_added == 1 and third.chunks_kept == len([r for r in before if r[0] == "docs/long.md"]) - 1
    after = chunk_rows(rag)
    assert not [r for r in after if r[0] == "docs/basalt.txt"]
    assert len(after) == len(before) - 1 - len([r for r in before if r[0] == "docs/basalt.txt"]) + 1
    keys = [(src, sha) for src, sha, _ in after]
    assert len(keys) == len(set(keys))  # never a duplicate chunk
    kept_ids = {i for _, _, i in after} & {i for _, _, i in before}
    assert len(kept_ids) == len(after) - 1  # unchanged chunks kept their rows (and vectors)

    # The index on disk matches the store: every live chunk, nothing deleted.
    collection = rag.collection("docs")
    index = VectorIndex.load(tmp_path / "home" / "rag" / collection.uid, 384)
    assert index.generation == collection.generation and len(index) == len(after)
    assert rag.search("docs", "rewritten fact about glaciers", top_k=1)[0].text.count("rewritten entirely") == 1
    assert not rag.search("docs", "Giant's Causeway columns", top_k=5, filters=Filters(source="docs/basalt.txt"))


def test_moved_text_reuses_embeddings_and_a_lost_index_is_rebuilt(tmp_path):
    folder = tmp_path / "docs"
    write_formats(folder)
    rag = make_rag(tmp_path / "home")
    rag.ingest(folder, "docs")
    (folder / "copy").mkdir()
    (folder / "copy" / "kettle-again.md").write_text((folder / "kettle.md").read_text())
    report = rag.ingest(folder, "docs")
    assert report.added == 1 and report.chunks_embedded == 0 and report.chunks_reused == report.chunks_added > 0

    collection = rag.collection("docs")
    directory = tmp_path / "home" / "rag" / collection.uid
    meta = json.loads((directory / "index.json").read_text())
    assert (directory / meta["file"]).exists() and not list(directory.glob("*.tmp"))
    for f in directory.iterdir():
        f.unlink()
    fresh = make_rag(tmp_path / "home")  # a new process: no index in memory, none on disk
    assert fresh.search("docs", "Who invented the Fresnel lens?", top_k=1)[0].source == "docs/lighthouse.html"
    with fresh.sessions() as s:
        total = s.scalar(select(func.count()).select_from(RagChunk))
    assert len(VectorIndex.load(directory, 384)) == total


def test_postgresql_store_with_its_full_text_search(tmp_path):
    from tests.conftest import free_port
    from tests.core.postgres import postgres_server

    folder = tmp_path / "docs"
    files = write_formats(folder)
    with postgres_server(free_port()) as url:
        rag = make_rag(tmp_path / "home", database_url=url)
        assert rag.sessions.kw["bind"].dialect.name == "postgresql"
        first = rag.ingest(folder, "docs", ChunkConfig(by="structure"))
        assert first.added == 5 and not first.skipped
        hit = rag.search("docs", "Who invented the Fresnel lens?", top_k=1)[0]
        assert hit.source == "docs/lighthouse.html" and hit.keyword_rank == 1 and hit.vector_rank == 1
        files["md"].write_text(files["md"].read_text().replace("three minutes", "four minutes"))
        files["txt"].unlink()
        again = rag.ingest(folder, "docs", ChunkConfig(by="structure"))
        assert (again.updated, again.removed, again.chunks_embedded) == (1, 1, 1)
        assert "four minutes" in rag.search("docs", "How long does the kettle take to boil?", top_k=1)[0].text
        rag.delete("docs")
        assert rag.collections() == []
