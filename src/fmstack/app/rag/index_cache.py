"""Which vector index a collection searches, kept loaded: its pgvector index when the store is PostgreSQL with a
`vector` column of the collection's dimensions, else its index files beside the store (`fmstack.app.rag.index`).

An index is loaded once, reloaded when an ingestion in another process saved a newer one, and rebuilt from the
embeddings in the store when it is missing or stale: the store is the truth, the index a cache of it.
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from fmstack.app.rag.collections import index_dir
from fmstack.app.rag.index import Index, VectorIndex
from fmstack.app.rag.pg_index import PgVectorIndex, vector_dimensions
from fmstack.core.store.schema import RagChunk, RagCollection

log = logging.getLogger(__name__)


class IndexCache:
    """The vector indexes of one store's collections, by collection uid; safe to share between threads."""

    def __init__(self, sessions: sessionmaker, home: Path):
        self.sessions = sessions
        self.home = home
        self._indexes: dict[str, Index] = {}
        self._lock = threading.Lock()
        self._told: set[int] = set()  # collection dimensions already told that they stay in files

    @functools.cached_property
    def _pgvector_dims(self) -> int | None:
        """The dimensions of the store's pgvector column, None without one. A PostgreSQL store without one says
        why, once: replicas sharing it will each keep their own index files."""
        with self.sessions() as s:
            dims, why = vector_dimensions(s)
        if why:
            log.warning("RAG vectors are kept in index files under %s: %s", self.home / "rag", why)
        return dims

    def _in_store(self, dimensions: int) -> bool:
        """Whether a collection of these dimensions keeps its vectors in PostgreSQL (pgvector), not in files."""
        dims = self._pgvector_dims
        if dims is not None and dims != dimensions and dimensions not in self._told:
            self._told.add(dimensions)
            log.warning(
                "RAG vectors of %d dimensions are kept in index files: pgvector's column has %d", dimensions, dims
            )
        return dims == dimensions

    def open_for_update(self, collection_id: int) -> Index:
        """The collection's pgvector index, or its saved index files if they match the store, else an index rebuilt
        from the stored embeddings."""
        with self.sessions() as s:
            collection = s.get(RagCollection, collection_id)
            dims, generation, directory = collection.dimensions, collection.generation, index_dir(self.home, collection)
        if self._in_store(dims):
            return PgVectorIndex.open(self.sessions, collection_id, dims)
        index = VectorIndex.load(directory, dims)
        if index is not None and index.generation == generation:
            return index
        return self.rebuild(collection_id)

    def rebuild(self, collection_id: int, page: int = 10_000) -> VectorIndex:
        """An index of the collection's stored embeddings, read `page` chunks at a time."""
        with self.sessions() as s:
            collection = s.get(RagCollection, collection_id)
            count = s.query(RagChunk).filter(RagChunk.collection_id == collection_id).count()
            index = VectorIndex(collection.dimensions, capacity=count + 1024)
            last = 0
            while True:
                rows = s.execute(
                    select(RagChunk.id, RagChunk.embedding)
                    .where(RagChunk.collection_id == collection_id, RagChunk.id > last)
                    .order_by(RagChunk.id)
                    .limit(page)
                ).all()
                if not rows:
                    break
                ids = np.array([r[0] for r in rows], dtype=np.int64)
                vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
                index.add(ids, vectors)
                last = int(ids[-1])
            index.generation = collection.generation
        return index

    def save(self, uid: str, index: Index, generation: int) -> None:
        """Make `index` the collection's index as of `generation`, saved and the one searched from now on."""
        index.save(self.home / "rag" / uid, generation)
        with self._lock:
            self._indexes[uid] = index

    def get(self, collection: RagCollection) -> Index:
        """The index to search: loaded once, reloaded when a newer one was saved (by an ingestion in another
        process), rebuilt from the store when there is none. A slightly stale index is fine: hits are read back
        from the store, so deleted chunks drop out, and keyword search sees new chunks at once. The pgvector
        index is always current; it is reopened when the collection changed only to fill vectors still missing."""
        if self._in_store(collection.dimensions):
            return self._pgvector(collection)
        directory = index_dir(self.home, collection)
        saved = VectorIndex.saved_generation(directory)
        with self._lock:
            current = self._indexes.get(collection.uid)
            if current is not None and (saved is None or saved == current.generation):
                return current
            index = VectorIndex.load(directory, collection.dimensions) if saved is not None else None
            if index is None:
                index = self.rebuild(collection.id)
                if len(index):
                    index.save(directory, index.generation)
            self._indexes[collection.uid] = index
            return index

    def _pgvector(self, collection: RagCollection) -> Index:
        with self._lock:
            current = self._indexes.get(collection.uid)
            if current is None or current.generation != collection.generation:
                current = PgVectorIndex.open(self.sessions, collection.id, collection.dimensions)
                self._indexes[collection.uid] = current
            return current
