"""`Rag`: collections, ingestion and retrieval over one store, one embedding model and the vector indexes (kept by
`IndexCache`: files beside the store, or the store itself when it is PostgreSQL with pgvector).

The server keeps one `Rag` (its indexes stay loaded, and reload when an ingestion elsewhere saved a newer one);
each CLI command makes its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy.orm import sessionmaker

from fmstack.app.rag.chunking import ChunkConfig, Tokenizer
from fmstack.app.rag.collections import delete_collection, get_collection, list_collections
from fmstack.app.rag.index import Index, VectorIndex
from fmstack.app.rag.index_cache import IndexCache
from fmstack.app.rag.ingest import Ingestor, IngestReport, Progress
from fmstack.app.rag.retrieve import Filters, Hit, check_rerank, check_search, hybrid_search
from fmstack.core.config import Settings
from fmstack.core.errors import InvalidRequest
from fmstack.core.store.schema import RagCollection
from fmstack.engines.pool import EnginePool

HEADING_ROOM = 32  # tokens kept free for the heading path embedded with each chunk


class Rag:
    """The RAG service: what the CLI, the server and the evaluation call. It owns the embedding model's side of
    things (tokenizer, chunk limit, embeddings) and delegates the rest: collections to `collections`, ingestion to
    `Ingestor`, the vector indexes to `IndexCache`, ranking to `retrieve.hybrid_search`."""

    def __init__(self, sessions: sessionmaker, settings: Settings, pool: EnginePool):
        self.sessions = sessions
        self.settings = settings
        self.pool = pool
        self.embedding_model = settings.embedding_model
        self._tokenizer: Tokenizer | None = None
        self.indexes = IndexCache(sessions, settings.home)

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

    def open_index_for_update(self, collection_id: int) -> Index:
        return self.indexes.open_for_update(collection_id)

    def rebuild_index(self, collection_id: int, page: int = 10_000) -> VectorIndex:
        return self.indexes.rebuild(collection_id, page)

    def save_index(self, uid: str, index: Index, generation: int) -> None:
        self.indexes.save(uid, index, generation)

    def index(self, collection: RagCollection) -> Index:
        """The index a search of this collection uses (see `IndexCache.get`)."""
        return self.indexes.get(collection)

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
        check_search(query, top_k, mode)
        rerank = check_rerank(rerank)
        with self.sessions() as s:
            col = get_collection(s, collection)
            vector = (embed or self.embed)([query])[0]
            return hybrid_search(
                s,
                col.id,
                self.index(col),
                query,
                vector,
                top_k=top_k,
                filters=filters or Filters(),
                rerank=rerank,
                candidates=max(candidates, top_k),
                mode=mode,
            )
