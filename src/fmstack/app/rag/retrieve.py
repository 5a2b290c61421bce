"""Hybrid retrieval: keyword (bm25) and vector (HNSW) candidates fused by reciprocal rank fusion, filtered,
optionally reranked, each hit scored by its cosine similarity to the question (the "I don't know" threshold).

Reranking options (`rerank`):
- `none`: the fused order.
- `similarity`: the fused candidates re-scored by the cosine similarity of the question and the whole chunk (its
  stored embedding): keyword-only candidates get a semantic score, and a chunk the keywords liked but which is
  about something else drops. (A cross-encoder would do this better; none is available offline here.)
- `mmr`: maximal marginal relevance (λ = 0.7) over those similarities, for diverse passages when overlapping
  chunks of one article crowd the top.
- `llm`, `cross-encoder`: a model scores each of the best `RERANK_DEPTH` fused candidates against the question
  (`fmstack.app.rag.rerank`); the rest follow in their fused order.
What each does to recall, MRR and latency is measured by benchmarks/rag.py (README's RAG table).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from fmstack.app.rag.expand import Expanded
from fmstack.app.rag.index import Index
from fmstack.app.rag.keyword import keyword_search
from fmstack.core.errors import InvalidRequest
from fmstack.core.store.schema import RagChunk, RagDocument

RRF_K = 60
MODES = ("hybrid", "vector", "keyword")
RERANKERS = ("none", "similarity", "mmr", "llm", "cross-encoder")
RERANK_DEPTH = 20  # fused candidates a model-based reranker scores
MMR_LAMBDA = 0.7


@dataclass
class Filters:
    """`source`: a glob over the cited source path ("docs/*.md"); `metadata`: equality on document or record
    fields ({"format": "pdf", "year": 2024})."""

    source: str | None = None
    metadata: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.source or self.metadata)


@dataclass
class Hit:
    """A retrieved chunk, with where it comes from (for citations) and why it was retrieved."""

    chunk_id: int
    text: str
    source: str
    title: str | None
    heading: str | None
    char_start: int
    char_end: int
    page: int | None
    page_end: int | None
    line: int | None
    similarity: float  # cosine of the chunk and the question (with expand="hyde": the hypothetical answer)
    score: float  # the fused (RRF) score, or the reranker's
    vector_rank: int | None  # 1-based rank among the vector candidates, None if not among them
    keyword_rank: int | None
    meta: dict = field(default_factory=dict)

    def location(self) -> str:
        """Where in the source, for people: "page 3", "line 12", "§ Early life", "chars 120–480"."""
        parts = []
        if self.page is not None:
            parts.append(
                f"page {self.page}" if self.page_end in (None, self.page) else f"pages {self.page}–{self.page_end}"
            )
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.heading:
            parts.append(f"§ {self.heading}")
        parts.append(f"chars {self.char_start}–{self.char_end}")
        return ", ".join(parts)

    def as_dict(self) -> dict:
        return asdict(self) | {"location": self.location()}


def rrf(rankings: list[list[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion: sum over rankings of 1 / (k + rank)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return scores


def allowed_documents(session: Session, collection_id: int, filters: Filters) -> list[int] | None:
    """Ids of the documents that pass the filters, or None when there are no filters."""
    if not filters:
        return None
    rows = session.execute(
        select(RagDocument.id, RagDocument.source, RagDocument.meta, RagDocument.format).where(
            RagDocument.collection_id == collection_id
        )
    )
    out = []
    for doc_id, source, meta, fmt in rows:
        if filters.source and not fnmatch.fnmatchcase(source, filters.source):
            continue
        doc_meta = (meta or {}) | {"format": fmt}
        doc_level = {k: v for k, v in filters.metadata.items() if k in doc_meta}
        if any(doc_meta[k] != v for k, v in doc_level.items()):
            continue
        out.append(doc_id)
    return out


def allowed_chunks(session: Session, documents: list[int], filters: Filters) -> np.ndarray:
    """Chunk ids of those documents whose record fields (JSONL) match the metadata filters not met by the
    document itself."""
    ids: list[int] = []
    for i in range(0, len(documents), 500):
        rows = session.execute(
            select(RagChunk.id, RagChunk.meta, RagDocument.meta, RagDocument.format)
            .join(RagDocument, RagDocument.id == RagChunk.document_id)
            .where(RagChunk.document_id.in_(documents[i : i + 500]))
        )
        for chunk_id, meta, doc_meta, fmt in rows:
            merged = (doc_meta or {}) | {"format": fmt} | (meta or {})
            if all(merged.get(k) == v for k, v in filters.metadata.items()):
                ids.append(chunk_id)
    return np.array(ids, dtype=np.int64)


def check_rerank(rerank: str | None) -> str:
    rerank = rerank or "none"
    if rerank not in RERANKERS:
        raise InvalidRequest(f"rerank must be one of {', '.join(RERANKERS)}, not '{rerank}'.", param="rerank")
    return rerank


def load_hits(session: Session, ids: list[int]) -> dict[int, tuple[RagChunk, RagDocument]]:
    if not ids:
        return {}
    rows = session.execute(
        select(RagChunk, RagDocument)
        .join(RagDocument, RagDocument.id == RagChunk.document_id)
        .where(RagChunk.id.in_(ids))
    )
    return {chunk.id: (chunk, doc) for chunk, doc in rows}


def mmr(query_sims: np.ndarray, vectors: np.ndarray, k: int, lam: float = MMR_LAMBDA) -> list[int]:
    """Indices of `k` items by maximal marginal relevance."""
    chosen: list[int] = []
    rest = list(range(len(query_sims)))
    pair = vectors @ vectors.T
    while rest and len(chosen) < k:
        penalty = pair[np.ix_(rest, chosen)].max(axis=1) if chosen else np.zeros(len(rest))
        values = lam * query_sims[rest] - (1 - lam) * penalty
        best = rest[int(np.argmax(values))]
        chosen.append(best)
        rest.remove(best)
    return chosen


def check_search(query: str, top_k: int, mode: str) -> None:
    """Refuse a search that cannot be answered, before any model or index is touched."""
    if mode not in MODES:
        raise InvalidRequest(f"mode must be hybrid, vector or keyword, not '{mode}'.", param="mode")
    if not query or not query.strip():
        raise InvalidRequest("The question is empty.", param="query")
    if not 1 <= top_k <= 100:
        raise InvalidRequest("top_k must be between 1 and 100.", param="top_k")


def hybrid_search(
    session: Session,
    collection_id: int,
    index: Index,
    query: str,
    vector: np.ndarray,
    *,
    top_k: int,
    filters: Filters,
    rerank: str,
    candidates: int,
    mode: str,
    scorer: Callable[[str, list[str]], list[float]] | None = None,
    expanded: Expanded | None = None,
) -> list[Hit]:
    """The `top_k` best chunks for `query` (embedded as `vector`): `candidates` from each retriever `mode` uses,
    fused by RRF, read back from the store (a chunk deleted since the index was saved drops out), reranked (by
    `scorer` for the model-based rerankers). With `expanded` the retrievers look for the question and its
    hypothetical answer, and the hits' similarity is the answer's (`fmstack.app.rag.expand`); rerankers still read
    the question alone."""
    text, look_for = (expanded.text, expanded.vector) if expanded else (query, vector)
    vector_rank, keyword_rank = _candidates(session, collection_id, index, text, look_for, filters, candidates)
    rankings = {"hybrid": [vector_rank, keyword_rank], "vector": [vector_rank], "keyword": [keyword_rank]}
    fused = rrf([list(r) for r in rankings[mode]])
    order = sorted(fused, key=lambda i: (-fused[i], i))[:candidates]
    rows = load_hits(session, order)
    order = [i for i in order if i in rows]  # a stale index may name a chunk deleted since
    if not order:
        return []
    matrix = _vectors(index, rows, order)
    sims = matrix @ vector
    if scorer is not None:
        texts = [_scored_text(rows[i][0]) for i in order[:RERANK_DEPTH]]
        picked, scores = _model_rerank(scorer(query, texts), [fused[i] for i in order], top_k)
    else:
        picked, scores = _rerank(rerank, sims, matrix, [fused[i] for i in order], top_k)
    gate = matrix @ expanded.passage if expanded is not None and expanded.passage is not None else sims
    return [
        _hit(*rows[order[p]], float(gate[p]), score, vector_rank, keyword_rank)
        for p, score in zip(picked, scores, strict=True)
    ]


def _vectors(index: Index, rows: dict, order: list[int]) -> np.ndarray:
    """The candidates' vectors: the index's own when it is a version being verified (`staged`), else as stored."""
    staged = getattr(index, "staged", None)
    if staged is not None:
        return staged(order)
    return np.frombuffer(b"".join(rows[i][0].embedding for i in order), np.float32).reshape(len(order), -1)


def _scored_text(chunk: RagChunk) -> str:
    """What a model reranker reads: the passage under its heading path (its subject)."""
    return f"{chunk.heading}\n{chunk.text}" if chunk.heading else chunk.text


def _model_rerank(scores: list[float], fused: list[float], top_k: int) -> tuple[list[int], list[float]]:
    """The scored candidates by score (ties: fused order), then the unscored ones in fused order."""
    ranked = sorted(range(len(scores)), key=lambda p: (-scores[p], p))
    rest = list(range(len(scores), len(fused)))
    picked = (ranked + rest)[:top_k]
    return picked, [scores[p] if p < len(scores) else fused[p] for p in picked]


def _candidates(
    session: Session, collection_id: int, index: Index, query: str, vector: np.ndarray, filters: Filters, n: int
) -> tuple[dict[int, int], dict[int, int]]:
    """The 1-based ranks of the best `n` chunks that pass the filters, by vector and by keyword (chunk id -> rank)."""
    documents = allowed_documents(session, collection_id, filters)
    allowed = allowed_chunks(session, documents, filters) if documents is not None else None
    vector_ids, _ = index.search(vector, n, allowed)
    keyword = keyword_search(session, collection_id, query, n, documents)
    if allowed is not None:
        keep = set(allowed.tolist())
        keyword = [(i, score) for i, score in keyword if i in keep]
    vector_rank = {int(i): r for r, i in enumerate(vector_ids.tolist(), 1)}
    keyword_rank = {i: r for r, (i, _) in enumerate(keyword, 1)}
    return vector_rank, keyword_rank


def _rerank(
    rerank: str, sims: np.ndarray, matrix: np.ndarray, fused: list[float], top_k: int
) -> tuple[list[int], list[float]]:
    """(positions of the `top_k` candidates kept, best first, and their scores) under the reranker."""
    if rerank == "similarity":
        picked = list(np.argsort(-sims, kind="stable")[:top_k])
    elif rerank == "mmr":
        picked = mmr(sims, matrix, top_k)
    else:
        picked = list(range(min(top_k, len(fused))))
        return picked, [fused[p] for p in picked]
    return picked, [float(sims[p]) for p in picked]


def _hit(
    chunk: RagChunk,
    doc: RagDocument,
    similarity: float,
    score: float,
    vector_rank: dict[int, int],
    keyword_rank: dict[int, int],
) -> Hit:
    return Hit(
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
        similarity=round(similarity, 4),
        score=round(float(score), 6),
        vector_rank=vector_rank.get(chunk.id),
        keyword_rank=keyword_rank.get(chunk.id),
        meta=(doc.meta or {}) | (chunk.meta or {}),
    )
