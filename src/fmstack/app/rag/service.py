"""`Rag`: collections, ingestion and retrieval over one store, one embedding model and the vector index: files
beside the store, or the store itself when it is PostgreSQL with pgvector (`fmstack.app.rag.pg_index`).

The server keeps one `Rag` (its indexes stay loaded, and reload when an ingestion elsewhere saved a newer one);
each CLI command makes its own.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from fmstack.app.rag.chunking import ChunkConfig, Tokenizer
from fmstack.app.rag.collections import delete_collection, get_collection, index_dir, list_collections
from fmstack.app.rag.index import Index, VectorIndex
from fmstack.app.rag.ingest import Ingestor, IngestReport, Progress
from fmstack.app.rag.keyword import keyword_search
from fmstack.app.rag.pg_index import PgVectorIndex, vector_dimensions
from fmstack.app.rag.retrieve import (
    Filters,
    Hit,
    allowed_chunks,
    allowed_documents,
    check_rerank,
    load_hits,
    mmr,
    rrf,
)
from fmstack.core.config import Settings
from fmstack.engines.pool import EnginePool
from fmstack.core.errors import InvalidRequest
from fmstack.core.store.schema import RagChunk, RagCollection

HEADING_ROOM = 32  # tokens kept free for the heading path embedded with each chunk

log = logging.getLogger(__name__)


class Rag:
    def __init__(self, sessions: sessionmaker, settings: Settings, pool: EnginePool):
        self.sessions = sessions
        self.settings = settings
        self.pool = pool
        self.embedding_model = settings.embedding_model
        self._tokenizer: Tokenizer | None = None
        self._indexes: dict[str, Index] = {}
        self._lock = threading.Lock()
        self._told: set[int] = set()  # collection dimensions already told that they stay in files

    # ------------------------------------------------------------------ the embedding model

    def _model_dir(self) -> Path:
        spec = self.pool.registry.get(self.embedding_model)
        if spec.kind != "embedding":
            raise InvalidRequest(f"FMSTACK_EMBEDDING_MODEL '{self.embedding_model}' is not an embedding model.")
        return spec.local_path(self.settings)

    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(self._model_dir() / "tokenizer.json")
        return self._tokenizer

    def max_chunk_tokens(self) -> int:
        try:
            config = json.loads((self._model_dir() / "sentence_bert_config.json").read_text())
            limit = int(config.get("max_seq_length", 256))
        except (OSError, ValueError):
            limit = 256
        return limit - 2 - HEADING_ROOM  # [CLS] and [SEP]

    def dimensions(self) -> int:
        return self.pool.embedding(self.embedding_model).dimensions

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors; a chunk whose heading pushes it past the model's limit loses its tail, not the run."""
        return self.pool.embedding(self.embedding_model).embed(texts, truncate=True)[0]

    # ------------------------------------------------------------------ collections

    def collections(self) -> list[dict]:
        with self.sessions() as s:
            return list_collections(s)

    def collection(self, name: str) -> RagCollection:
        with self.sessions() as s:
            return get_collection(s, name)

    def delete(self, name: str) -> None:
        with self.sessions.begin() as s:
            delete_collection(s, self.settings.home, name)

    def ingest(
        self,
        path: Path,
        collection: str,
        config: ChunkConfig | None = None,
        text_field: str = "text",
        progress: Progress | None = None,
    ) -> IngestReport:
        return Ingestor(self, collection, config or ChunkConfig(), text_field).run(path, progress)

    # ------------------------------------------------------------------ the vector index

    def _dir(self, uid: str) -> Path:
        return self.settings.home / "rag" / uid

    @functools.cached_property
    def _pgvector_dims(self) -> int | None:
        """The dimensions of the store's pgvector column, None without one. A PostgreSQL store without one says
        why, once: replicas sharing it will each keep their own index files."""
        with self.sessions() as s:
            dims, why = vector_dimensions(s)
        if why:
            log.warning("RAG vectors are kept in index files under %s: %s", self.settings.home / "rag", why)
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

    def open_index_for_update(self, collection_id: int) -> Index:
        """The collection's pgvector index, or its saved index files if they match the store, else an index rebuilt
        from the stored embeddings."""
        with self.sessions() as s:
            collection = s.get(RagCollection, collection_id)
            uid, dims, generation = collection.uid, collection.dimensions, collection.generation
        if self._in_store(dims):
            return PgVectorIndex.open(self.sessions, collection_id, dims)
        index = VectorIndex.load(self._dir(uid), dims)
        if index is not None and index.generation == generation:
            return index
        return self.rebuild_index(collection_id)

    def rebuild_index(self, collection_id: int, page: int = 10_000) -> VectorIndex:
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

    def save_index(self, uid: str, index: Index, generation: int) -> None:
        index.save(self._dir(uid), generation)
        with self._lock:
            self._indexes[uid] = index

    def index(self, collection: RagCollection) -> Index:
        """The index to search: loaded once, reloaded when a newer one was saved (by an ingestion in another
        process), rebuilt from the store when there is none. A slightly stale index is fine: hits are read back
        from the store, so deleted chunks drop out, and keyword search sees new chunks at once. The pgvector
        index is always current; it is reopened when the collection changed only to fill vectors still missing."""
        if self._in_store(collection.dimensions):
            with self._lock:
                current = self._indexes.get(collection.uid)
                if current is None or current.generation != collection.generation:
                    current = PgVectorIndex.open(self.sessions, collection.id, collection.dimensions)
                    self._indexes[collection.uid] = current
                return current
        directory = index_dir(self.settings.home, collection)
        saved = VectorIndex.saved_generation(directory)
        with self._lock:
            current = self._indexes.get(collection.uid)
            if current is not None and (saved is None or saved == current.generation):
                return current
            index = VectorIndex.load(directory, collection.dimensions) if saved is not None else None
            if index is None:
                index = self.rebuild_index(collection.id)
                if len(index):
                    index.save(directory, index.generation)
            self._indexes[collection.uid] = index
            return index

    # ------------------------------------------------------------------ retrieval

    def search(
        self,
        collection: str,
        query: str,
        top_k: int = 5,
        filters: Filters | None = None,
        rerank: str | None = None,
        candidates: int = 50,
        embed: Callable[[list[str]], np.ndarray] | None = None,
        mode: str = "hybrid",
    ) -> list[Hit]:
        """The `top_k` best chunks for `query`: hybrid (bm25 + vectors, RRF), filtered, optionally reranked.
        `mode` "vector" or "keyword" uses one retriever alone (to measure what fusion adds)."""
        if mode not in ("hybrid", "vector", "keyword"):
            raise InvalidRequest(f"mode must be hybrid, vector or keyword, not '{mode}'.", param="mode")
        if not query or not query.strip():
            raise InvalidRequest("The question is empty.", param="query")
        if not 1 <= top_k <= 100:
            raise InvalidRequest("top_k must be between 1 and 100.", param="top_k")
        rerank = check_rerank(rerank)
        filters = filters or Filters()
        candidates = max(candidates, top_k)
        with self.sessions() as s:
            col = get_collection(s, collection)
            documents = allowed_documents(s, col.id, filters)
            allowed = allowed_chunks(s, documents, filters) if documents is not None else None
            vector = (embed or self.embed)([query])[0]
            index = self.index(col)
            vector_ids, _ = index.search(vector, candidates, allowed)
            keyword = keyword_search(s, col.id, query, candidates, documents)
            if allowed is not None:
                keep = set(allowed.tolist())
                keyword = [(i, score) for i, score in keyword if i in keep]
            vector_rank = {int(i): r for r, i in enumerate(vector_ids.tolist(), 1)}
            keyword_rank = {i: r for r, (i, _) in enumerate(keyword, 1)}
            rankings = {"hybrid": [vector_rank, keyword_rank], "vector": [vector_rank], "keyword": [keyword_rank]}
            fused = rrf([list(r) for r in rankings[mode]])
            order = sorted(fused, key=lambda i: (-fused[i], i))[:candidates]
            rows = load_hits(s, order)
            order = [i for i in order if i in rows]  # a stale index may name a chunk deleted since
            if not order:
                return []
            matrix = np.frombuffer(b"".join(rows[i][0].embedding for i in order), np.float32).reshape(len(order), -1)
            sims = matrix @ vector
            if rerank == "similarity":
                picked = list(np.argsort(-sims, kind="stable")[:top_k])
                scores = [float(sims[p]) for p in picked]
            elif rerank == "mmr":
                picked = mmr(sims, matrix, top_k)
                scores = [float(sims[p]) for p in picked]
            else:
                picked = list(range(min(top_k, len(order))))
                scores = [fused[order[p]] for p in picked]
            hits = []
            for p, score in zip(picked, scores, strict=True):
                chunk, doc = rows[order[p]]
                hits.append(
                    Hit(
                        chunk_id=chunk.id,
                        text=chunk.text,
                        source=doc.source,
                        title=doc.title,
                        heading=chunk.heading,
                        char_start=chunk.char_start,
                        char_end=chunk.char_end,
                        page=chunk.page,
                        page_end=chunk.page_end,
                        line=chunk.line,
                        similarity=round(float(sims[p]), 4),
                        score=round(float(score), 6),
                        vector_rank=vector_rank.get(chunk.id),
                        keyword_rank=keyword_rank.get(chunk.id),
                        meta=(doc.meta or {}) | (chunk.meta or {}),
                    )
                )
            return hits
