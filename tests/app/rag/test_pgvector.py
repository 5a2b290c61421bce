"""pgvector as the vector index of a PostgreSQL store: the same recall as the hnswlib files on the same corpus,
vector rows in step with the chunks through re-ingestion, deletion and an interrupted run, filters, a replica
with an empty data dir, the hnswlib files (with the reason said once) when the extension cannot be created, and
migration 0005 over chunks stored before it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from pgvector.sqlalchemy import Vector
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.orm import sessionmaker

from fmstack.app.rag import ChunkConfig, Filters
from fmstack.app.rag.corpus import write_wiki_corpus
from fmstack.app.rag.evaluate import evaluate, load_questions
from fmstack.app.rag.index import VectorIndex
from fmstack.app.rag.pg_index import PgVectorIndex, vector_dimensions
from tests.conftest import free_port
from tests.core.postgres import postgres_server
from tests.core.test_migration_0003 import alembic

from .helpers import WIKI_TITLES, make_rag, write_formats

pytestmark = pytest.mark.slow  # starts PostgreSQL and embeds a few hundred chunks

QUESTIONS = Path(__file__).resolve().parents[3] / "examples" / "rag" / "questions.yaml"
TITLES = WIKI_TITLES[:4]


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server(free_port(), pgvector=True) as url:
        yield url


@pytest.fixture(scope="module")
def embed_once():
    """Each text embedded once for the module, so the SQLite and PostgreSQL stores get the same vectors."""
    cache: dict[str, np.ndarray] = {}

    def wrap(rag):
        def embed(texts: list[str]) -> np.ndarray:
            missing = [t for t in dict.fromkeys(texts) if t not in cache]
            if missing:
                cache.update(zip(missing, type(rag).embed(rag, missing), strict=True))
            return np.stack([cache[t] for t in texts])

        rag.embed = embed
        return rag

    return wrap


def vector_rows(rag, collection: str = "docs") -> tuple[int, int, list[int]]:
    """The collection's (chunks, chunks without a vector, ids whose vector differs from their stored embedding)."""
    statement = text(
        "SELECT c.id, c.embedding, c.embedding_vector FROM rag_chunks c JOIN rag_collections r "
        "ON r.id = c.collection_id WHERE r.name = :name"
    ).columns(embedding_vector=Vector(384))
    with rag.sessions() as s:
        rows = s.execute(statement, {"name": collection}).all()
    missing = sum(r[2] is None for r in rows)
    wrong = [r[0] for r in rows if r[2] is not None and not np.allclose(np.frombuffer(r[1], np.float32), r[2])]
    return len(rows), missing, wrong


def test_same_recall_as_hnswlib_and_no_index_files(tmp_path, pg_url, embed_once):
    write_wiki_corpus(tmp_path / "wiki", TITLES)
    questions = [q for q in load_questions(QUESTIONS) if q.answerable and q.title in TITLES]
    files = embed_once(make_rag(tmp_path / "sqlite"))
    pg = embed_once(make_rag(tmp_path / "pg", database_url=pg_url))
    for rag in (files, pg):
        report = rag.ingest(tmp_path / "wiki", "wiki")
        assert not report.skipped and report.chunks_total > 100
    assert isinstance(pg.index(pg.collection("wiki")), PgVectorIndex)
    assert isinstance(files.index(files.collection("wiki")), VectorIndex)
    assert not (tmp_path / "pg" / "rag").exists()

    on_files = evaluate(files, "wiki", questions, k=10, mode="vector")
    on_pg = evaluate(pg, "wiki", questions, k=10, mode="vector")
    assert on_pg.recall == on_files.recall and on_pg.recall["@10"] >= 0.8
    assert on_pg.mrr == pytest.approx(on_files.mrr)

    # chunk level, against exact search over the stored embeddings
    vectors = pg.embed([q.question for q in questions])
    assert chunk_recall(pg, vectors) == chunk_recall(files, vectors) == 1.0


def chunk_recall(rag, queries: np.ndarray, k: int = 10) -> float:
    """recall@k of the collection's vector index against exact search; its similarities checked on the way."""
    with rag.sessions() as s:
        rows = s.execute(text("SELECT id, embedding FROM rag_chunks ORDER BY id")).all()
    ids = np.array([r[0] for r in rows])
    matrix = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), -1)
    index = rag.index(rag.collection("wiki"))
    recalls = []
    for vector in queries:
        found, sims = index.search(vector, k)
        np.testing.assert_allclose(sims, matrix[np.searchsorted(ids, found)] @ vector, atol=1e-5)
        recalls.append(len(set(found.tolist()) & set(ids[np.argsort(-(matrix @ vector))[:k]].tolist())) / k)
    return float(np.mean(recalls))


def test_vector_rows_follow_the_chunks_and_replicas_share_them(tmp_path, pg_url, embed_once):
    folder = tmp_path / "docs"
    files = write_formats(folder)
    rag = embed_once(make_rag(tmp_path / "home", database_url=pg_url))
    config = ChunkConfig(by="structure")
    first = rag.ingest(folder, "docs", config)
    assert first.added == 5 and not first.skipped
    total, missing, wrong = vector_rows(rag)
    assert (total, missing, wrong) == (first.chunks_total, 0, [])
    lens = rag.search("docs", "Who invented the Fresnel lens?", top_k=1)[0]
    assert lens.source == "docs/lighthouse.html" and lens.vector_rank == 1

    files["md"].write_text(files["md"].read_text().replace("three minutes", "four minutes"))
    files["txt"].unlink()
    again = rag.ingest(folder, "docs", config)
    assert (again.updated, again.removed, again.chunks_embedded) == (1, 1, 1)
    total, missing, wrong = vector_rows(rag)
    assert (total, missing, wrong) == (again.chunks_total, 0, [])  # no orphan, duplicate or stale vector
    index = rag.index(rag.collection("docs"))
    assert len(index.search(rag.embed(["basalt columns"])[0], 100)[0]) == total
    assert "four minutes" in rag.search("docs", "How long does the kettle take to boil?", top_k=1)[0].text

    # filters, in the vector retriever alone
    md = rag.search(
        "docs", "Who invented the Fresnel lens?", top_k=5, filters=Filters(source="docs/*.md"), mode="vector"
    )
    assert md and {h.source for h in md} == {"docs/kettle.md"}
    finance = rag.search("docs", "order", top_k=5, filters=Filters(metadata={"team": "finance"}), mode="vector")
    assert [h.text[:11] for h in finance] == ["Invoice 77 "]

    # a run that stopped between storing its chunks and their vectors: the next process to open the index fills them
    with rag.sessions.begin() as s:
        s.execute(text("UPDATE rag_chunks SET embedding_vector = NULL WHERE id = :id"), {"id": lens.chunk_id})
    replica = embed_once(make_rag(tmp_path / "replica", database_url=pg_url))
    hit = replica.search("docs", "Who invented the Fresnel lens?", top_k=1, mode="vector")[0]
    assert hit.chunk_id == lens.chunk_id and hit.vector_rank == 1
    assert vector_rows(rag)[1] == 0
    assert not (tmp_path / "replica" / "rag").exists() and not (tmp_path / "home" / "rag").exists()

    rag.delete("docs")
    assert vector_rows(rag) == (0, 0, [])


def test_without_the_extension_the_vectors_stay_in_files_and_say_why(tmp_path, pg_url, embed_once, caplog):
    admin = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:  # a role that may not create the (untrusted) extension
        c.execute(text("CREATE ROLE plain LOGIN"))
        c.execute(text("CREATE DATABASE plain OWNER plain"))
    admin.dispose()
    url = pg_url.replace("fmstack@", "plain@").rsplit("/", 1)[0] + "/plain"
    folder = tmp_path / "docs"
    write_formats(folder)
    with caplog.at_level(logging.WARNING):
        rag = embed_once(make_rag(tmp_path / "home", database_url=url))
        rag.ingest(folder, "docs", ChunkConfig(by="structure"))
        hit = rag.search("docs", "Who invented the Fresnel lens?", top_k=1)[0]
    assert hit.source == "docs/lighthouse.html" and hit.vector_rank == 1
    told = [r.getMessage() for r in caplog.records if "kept in index files" in r.getMessage()]
    assert len(told) == 1 and "no vector column" in told[0]
    assert isinstance(rag.index(rag.collection("docs")), VectorIndex)
    assert list((tmp_path / "home" / "rag").glob("*/index.json"))


def test_migration_0005_adds_the_column_that_opening_fills_and_downgrades(tmp_path, pg_url):
    admin = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text("CREATE DATABASE migrated"))
    admin.dispose()
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + "/migrated")
    alembic(engine, "upgrade", "0004")
    vector = np.zeros(384, np.float32)
    vector[7] = 1.0
    with engine.begin() as c:  # a chunk stored by a 0004-era fmstack
        c.execute(
            text(
                "INSERT INTO rag_collections (id, uid, name, created_at, updated_at, embedding_model, dimensions, "
                "generation, config) VALUES (1, 'u', 'c', now(), now(), 'm', 384, 1, '{}')"
            )
        )
        c.execute(
            text(
                "INSERT INTO rag_documents (id, collection_id, root, path, source, format, sha256, size, chunking, "
                "meta, created_at, updated_at) VALUES (1, 1, '/r', '/r/a.md', 'r/a.md', 'markdown', 'h', 1, 'k', "
                "'{}', now(), now())"
            )
        )
        c.execute(
            text(
                "INSERT INTO rag_chunks (id, collection_id, document_id, ordinal, sha256, text, char_start, char_end, "
                "tokens, meta, embedding) VALUES (5, 1, 1, 0, 's', 'Basalt', 0, 6, 1, '{}', :blob)"
            ),
            {"blob": vector.tobytes()},
        )
    alembic(engine, "upgrade", "0005")
    sessions = sessionmaker(engine)
    with sessions() as s:
        assert vector_dimensions(s) == (384, "")
    index = PgVectorIndex.open(sessions, 1, 384)  # fills the vector the migration could not write
    ids, sims = index.search(vector, 5)
    assert ids.tolist() == [5] and sims[0] == pytest.approx(1.0)
    alembic(engine, "downgrade", "0004")
    with sessions() as s:
        assert vector_dimensions(s)[0] is None
        assert "embedding_vector" not in {c["name"] for c in inspect(engine).get_columns("rag_chunks")}
    engine.dispose()
