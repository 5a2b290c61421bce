"""`Rag`: collections, ingestion and retrieval over one store, one embedding model and the vector indexes (kept by
`IndexCache`: files beside the store, or the store itself when it is PostgreSQL with pgvector).

The server keeps one `Rag` (its indexes stay loaded, and reload when an ingestion elsewhere saved a newer one);
each CLI command makes its own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy.orm import sessionmaker

from fmstack.app.rag.answer import MIN_SIMILARITY
from fmstack.app.rag.chunking import ChunkConfig, Tokenizer
from fmstack.app.rag.collections import delete_collection, get_collection, list_collections, spec_of
from fmstack.app.rag.embedders import DEFAULT_BACKEND, EmbedderSpec, OnnxEmbedder, TunedEmbedder
from fmstack.app.rag.expand import check_expand, expand_query
from fmstack.app.rag.index import Index, VectorIndex
from fmstack.app.rag.index_cache import IndexCache
from fmstack.app.rag.ingest import Ingestor, IngestReport, Progress
from fmstack.app.rag.rerank import Scorer, make_scorer
from fmstack.app.rag.retrieve import Filters, Hit, check_rerank, check_search, hybrid_search
from fmstack.core.config import Settings
from fmstack.core.errors import InvalidRequest
from fmstack.core.store.schema import RagCollection
from fmstack.engines.pool import EnginePool
from fmstack.gateway import Gateway

HEADING_ROOM = 32  # tokens kept free for the heading path embedded with each chunk


class Rag:
    """The RAG service: what the CLI, the server and the evaluation call. It owns the embedding model's side of
    things (tokenizer, chunk limit, embeddings) and delegates the rest: collections to `collections`, ingestion to
    `Ingestor`, the vector indexes to `IndexCache`, ranking to `retrieve.hybrid_search`."""

    def __init__(self, sessions: sessionmaker, settings: Settings, pool: EnginePool, gateway: Gateway | None = None):
        self.sessions = sessions
        self.settings = settings
        self.pool = pool
        self.gateway = gateway  # for the chat-model steps (`rerank="llm"`, `expand="hyde"`): `chat_gateway()`
        self.embedding_model = settings.embedding_model
        self._tokenizer: Tokenizer | None = None
        self._embedders: dict[EmbedderSpec, Callable[[list[str]], np.ndarray]] = {}
        self._embedders_lock = threading.Lock()
        self.indexes = IndexCache(sessions, settings.home)

    # ------------------------------------------------------------------ the embedding model

    def model_dir(self) -> Path:
        spec = self.pool.registry.get(self.embedding_model)
        if spec.kind != "embedding":
            raise InvalidRequest(f"FMSTACK_EMBEDDING_MODEL '{self.embedding_model}' is not an embedding model.")
        return spec.local_path(self.settings)

    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(self.model_dir() / "tokenizer.json")
        return self._tokenizer

    def max_chunk_tokens(self) -> int:
        try:
            config = json.loads((self.model_dir() / "sentence_bert_config.json").read_text())
            limit = int(config.get("max_seq_length", 256))
        except (OSError, ValueError):
            limit = 256
        return limit - 2 - HEADING_ROOM  # [CLS] and [SEP]

    def dimensions(self) -> int:
        return self.pool.embedding(self.embedding_model).dimensions

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors by the registry model on sentence-transformers (the default backend); a chunk whose heading
        pushes it past the model's limit loses its tail, not the run."""
        return self.pool.embedding(self.embedding_model).embed(texts, truncate=True)[0]

    def default_spec(self, backend: str | None = None) -> EmbedderSpec:
        return EmbedderSpec(self.embedding_model, backend or DEFAULT_BACKEND).check()

    def embedder(self, spec: EmbedderSpec) -> Callable[[list[str]], np.ndarray]:
        """The function that makes `spec`'s vectors, loaded once per `Rag`."""
        if spec == self.default_spec():
            return self.embed
        with self._embedders_lock:
            if spec not in self._embedders:
                if spec.model != self.embedding_model:
                    raise InvalidRequest(
                        f"This collection was embedded with '{spec.model}', but FMSTACK_EMBEDDING_MODEL is "
                        f"'{self.embedding_model}': set it back, or ingest into a new collection."
                    )
                if spec.path:
                    self._embedders[spec] = TunedEmbedder(Path(spec.path)).embed
                else:
                    limit = self.max_chunk_tokens() + 2 + HEADING_ROOM
                    self._embedders[spec] = OnnxEmbedder(
                        self.model_dir(), self.settings.models_dir / "onnx-int8", limit, self.settings.threads
                    ).embed
            return self._embedders[spec]

    def chat_gateway(self) -> Gateway:
        """The gateway the chat-model steps (LLM reranking, query expansion) call, made on first need."""
        if self.gateway is None:
            self.gateway = Gateway(self.settings, self.sessions, self.pool)
        return self.gateway

    def scorer(self, rerank: str, collection: RagCollection, model: str | None = None) -> Scorer | None:
        """What scores (question, passage) pairs for a model-based reranker; None for the others."""
        return make_scorer(self, rerank, collection, model)

    # ------------------------------------------------------------------ collections

    def collections(self) -> list[dict]:
        with self.sessions() as s:
            return list_collections(s)

    def collection(self, name: str) -> RagCollection:
        with self.sessions() as s:
            return get_collection(s, name)

    def threshold(self, name: str, expand: str | None = None) -> float:
        """The collection's "I don't know" threshold for the similarity `expand` gives its hits: calibrated for it
        (`fmstack rag calibrate [--expand hyde]`), else the one calibrated without expansion, else the global one."""
        calibrated = self.calibrated_threshold(name, expand)
        if calibrated is None and expand == "hyde":
            calibrated = self.calibrated_threshold(name)
        return MIN_SIMILARITY if calibrated is None else calibrated

    def calibrated_threshold(self, name: str, expand: str | None = None) -> float | None:
        """The threshold `rag calibrate` stored for searches with `expand`, None if it never ran for them."""
        col = self.collection(name)
        if expand == "hyde":
            return ((col.calibration or {}).get("hyde") or {}).get("threshold")
        return col.min_similarity

    def close(self) -> None:
        """Free the models (and commit the traces of model-based reranking)."""
        if self.gateway is not None:
            self.gateway.close()
        else:
            self.pool.close()

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
        backend: str | None = None,
    ) -> IngestReport:
        """Ingest `path`; `backend` picks how a new collection's vectors are made (an existing one keeps its own)."""
        return Ingestor(self, collection, config or ChunkConfig(), text_field, backend=backend).run(path, progress)

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
        rerank_model: str | None = None,
        index: Index | None = None,
        expand: str | None = None,
        expand_model: str | None = None,
    ) -> list[Hit]:
        """The `top_k` best chunks for `query`: hybrid (bm25 + vectors, RRF), filtered, optionally reranked.
        `mode` "vector" or "keyword" uses one retriever alone (to measure what fusion adds). `embed` and `index`
        replace the collection's own (to verify an index version before switching to it). `expand="hyde"` searches
        with a hypothetical answer written by `expand_model` (`fmstack.app.rag.expand`)."""
        check_search(query, top_k, mode)
        rerank = check_rerank(rerank)
        expand = check_expand(expand)
        with self.sessions() as s:
            col = get_collection(s, collection)
            scorer = self.scorer(rerank, col, rerank_model)
            embed = embed or self.embedder(spec_of(col))
            vector = embed([query])[0]
            expanded = None
            if expand == "hyde":
                model = expand_model or self.settings.default_model
                expanded = expand_query(self.chat_gateway(), model, query, vector, embed)
            return hybrid_search(
                s,
                col.id,
                index or self.index(col),
                query,
                vector,
                top_k=top_k,
                filters=filters or Filters(),
                rerank=rerank,
                candidates=max(candidates, top_k),
                mode=mode,
                scorer=scorer,
                expanded=expanded,
            )
