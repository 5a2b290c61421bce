"""Migration 0004 (RAG) on a store holding 0003 data: the RAG tables, the keyword index and traces.retrieval are
added, nothing else changes; the FTS triggers keep the keyword index in step; it downgrades cleanly."""

from sqlalchemy import inspect, text

from fmstack.core.config import get_settings
from tests.core.test_migration_0003 import alembic, engine_for, fill_0002

RAG_TABLES = {"rag_collections", "rag_documents", "rag_chunks"}


def test_0004_upgrades_a_0003_store_and_downgrades_cleanly(home):
    engine = engine_for(get_settings())
    alembic(engine, "upgrade", "0003")
    fill_0002(engine)
    before = set(inspect(engine).get_table_names())
    alembic(engine, "upgrade", "0004")
    tables = set(inspect(engine).get_table_names())
    assert RAG_TABLES | {"rag_chunks_fts"} <= tables and before <= tables
    assert "retrieval" in {c["name"] for c in inspect(engine).get_columns("traces")}
    with engine.begin() as c:
        old = c.execute(text("SELECT response_text, retrieval FROM traces WHERE id = 't-old'")).one()
        assert tuple(old) == ("hello", None)
        c.execute(
            text(
                "INSERT INTO rag_collections (id, uid, name, created_at, updated_at, embedding_model, dimensions, "
                "generation, config) VALUES (1, 'u', 'c', '2026-01-01', '2026-01-01', 'm', 3, 0, '{}')"
            )
        )
        c.execute(
            text(
                "INSERT INTO rag_documents (id, collection_id, root, path, source, format, sha256, size, chunking, "
                "meta, created_at, updated_at) VALUES (1, 1, '/r', '/r/a.md', 'r/a.md', 'markdown', 'h', 1, 'k', "
                "'{}', '2026-01-01', '2026-01-01')"
            )
        )
        c.execute(
            text(
                "INSERT INTO rag_chunks (collection_id, document_id, ordinal, sha256, text, heading, char_start, "
                "char_end, tokens, meta, embedding) VALUES (1, 1, 0, 's', 'Basalt columns cool slowly', 'Geology', "
                "0, 26, 4, '{}', x'00')"
            )
        )
        match = "SELECT rowid FROM rag_chunks_fts WHERE rag_chunks_fts MATCH :q"
        assert c.execute(text(match), {"q": "column"}).all() == [(1,)]  # porter stemming: column ~ columns
        c.execute(text("UPDATE rag_chunks SET text = 'Granite cools' WHERE id = 1"))
        assert c.execute(text(match), {"q": "basalt"}).all() == []
        c.execute(text("DELETE FROM rag_collections"))  # cascades to documents, chunks and the keyword index
        assert c.execute(text("SELECT count(*) FROM rag_chunks")).scalar() == 0
        assert c.execute(text(match), {"q": "granite"}).all() == []
    alembic(engine, "downgrade", "0003")
    assert set(inspect(engine).get_table_names()) == before
    assert "retrieval" not in {c["name"] for c in inspect(engine).get_columns("traces")}
    with engine.begin() as c:
        assert c.execute(text("SELECT response_text FROM traces WHERE id = 't-old'")).scalar() == "hello"
