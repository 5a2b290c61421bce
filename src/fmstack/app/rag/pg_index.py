"""The vector index inside PostgreSQL (pgvector), for stores whose server has the `vector` extension.

Each chunk's vector is a column of its own row (`rag_chunks.embedding_vector`, migration 0005) with an HNSW index
on cosine distance, so every process that opens the store searches the same index, with nothing on local disk,
and a deleted chunk or collection takes its vector with it. The vector is written right after the transaction
that stored its chunk; a chunk whose vector is still missing (stored before the migration, or by a run that
stopped between the two commits) is filled from `rag_chunks.embedding` when an index is opened.

A search restricted to a few allowed chunks is exact, as in the hnswlib index; otherwise the HNSW scan goes on
until it has k rows that pass the filters (pgvector 0.8's iterative scan, up to hnsw.max_scan_tuples rows: a
small collection beside a big one, or a pgvector older than 0.8, may get fewer than k vector candidates; keyword
search still sees every chunk). Writing costs more than in hnswlib: pgvector adds to its graph one row at a time,
on one core (about 140 vectors/s against hnswlib's 1,350 on a loaded 2-core machine, 384 dimensions).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from pgvector.sqlalchemy import Vector
from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session, sessionmaker

from fmstack.app.rag.index import EF_SEARCH

log = logging.getLogger(__name__)

HNSW_EF_SEARCH_MAX = 1000  # pgvector's upper bound for hnsw.ef_search
# A filter allowing at most this many chunks is searched exactly. PostgreSQL reads their vectors straight from
# the rows, so exact search stays cheap far beyond hnswlib's limit (fmstack.app.rag.index.EXACT_LIMIT).
EXACT_LIMIT = 20_000


def vector_dimensions(session: Session) -> tuple[int | None, str]:
    """(dimensions of `rag_chunks.embedding_vector`, "") when this store keeps vectors in PostgreSQL, else
    (None, why not) for the one message that says so, (None, "") on SQLite where files are the only way."""
    if session.get_bind().dialect.name != "postgresql":
        return None, ""
    dims = session.execute(
        text(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'rag_chunks'::regclass "
            "AND attname = 'embedding_vector' AND NOT attisdropped"
        )
    ).scalar()
    if dims is not None:
        return int(dims), ""
    available = session.execute(
        text("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
    ).scalar()
    if available is None:
        return None, (
            "the PostgreSQL server has no pgvector extension (e.g. Debian's postgresql-NN-pgvector); installed later, "
            "it needs the statements of migration 0005_pgvector run by hand"
        )
    return None, (
        f"pgvector {available} is on the server but the store has no vector column: migration 0005 ran before it "
        "was installed, or as a role that may not CREATE EXTENSION vector, or found a pgvector without HNSW (< 0.5)"
    )


class PgVectorIndex:
    """One collection's vectors in `rag_chunks.embedding_vector`; see the module docstring."""

    def __init__(self, sessions: sessionmaker, collection_id: int, dims: int, generation: int, iterative: bool):
        self.sessions = sessions
        self.collection_id = collection_id
        self.dims = dims
        self.generation = generation
        self._iterative = iterative
        self._vector = Vector(dims)

    @classmethod
    def open(cls, sessions: sessionmaker, collection_id: int, dims: int, page: int = 5_000) -> PgVectorIndex:
        """The collection's index, its missing vectors filled in first."""
        with sessions() as s:
            generation = s.execute(  # a column read, not the ORM row: this runs mid-migration too (0005)
                text("SELECT generation FROM rag_collections WHERE id = :c"), {"c": collection_id}
            ).scalar_one()
            version = s.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar_one()
        iterative = tuple(int(p) for p in version.split(".")[:2]) >= (0, 8)
        index = cls(sessions, collection_id, dims, generation, iterative)
        while True:
            with sessions() as s:
                rows = s.execute(
                    text(
                        "SELECT id, embedding FROM rag_chunks WHERE collection_id = :c AND embedding_vector IS NULL "
                        "LIMIT :page"
                    ),
                    {"c": collection_id, "page": page},
                ).all()
            if not rows:
                return index
            log.info("pgvector: filling %d missing vectors of collection %d", len(rows), collection_id)
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
            index.add(np.array([r[0] for r in rows], dtype=np.int64), vectors)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not len(ids):
            return
        statement = text("UPDATE rag_chunks SET embedding_vector = :v WHERE id = :id").bindparams(
            bindparam("v", type_=self._vector)
        )
        with self.sessions.begin() as s:
            s.execute(
                statement,
                [{"id": int(i), "v": np.asarray(v, np.float32)} for i, v in zip(ids, vectors, strict=True)],
            )

    def remove(self, ids: np.ndarray) -> None:
        """Nothing to do: a vector is a column of its chunk's row, deleted with it."""

    def search(self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        empty = np.empty(0, np.int64), np.empty(0, np.float32)
        if k <= 0 or (allowed is not None and not len(allowed)):
            return empty
        distance = "embedding_vector <=> :q"
        where = "collection_id = :c AND embedding_vector IS NOT NULL"
        params: dict = {"q": np.asarray(vector, np.float32), "c": self.collection_id, "k": k}
        if allowed is not None:
            where += " AND id = ANY(:allowed)"
            params["allowed"] = [int(i) for i in allowed]
            if len(allowed) <= EXACT_LIMIT:
                distance = f"({distance}) + 0"  # not the indexed expression: exact over the allowed rows
        statement = text(
            f"SELECT id, 1 - (embedding_vector <=> :q) FROM rag_chunks WHERE {where} ORDER BY {distance} LIMIT :k"
        ).bindparams(bindparam("q", type_=self._vector))
        with self.sessions.begin() as s:  # SET LOCAL lasts until this transaction ends
            s.execute(text(f"SET LOCAL hnsw.ef_search = {min(max(EF_SEARCH, k), HNSW_EF_SEARCH_MAX)}"))
            if self._iterative:
                s.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))
            rows = s.execute(statement, params).all()
        if not rows:
            return empty
        return np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.float32)

    def save(self, directory: Path, generation: int) -> None:
        """Nothing to write: the vectors were committed by `add`; only the generation moves."""
        self.generation = generation
