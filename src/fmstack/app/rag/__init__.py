"""Retrieval-augmented generation: ingest documents into collections, retrieve passages (keyword + vector,
fused), and answer with citations.

    from fmstack.app.rag import Rag, ChunkConfig, Filters
    rag = Rag(sessions, settings, pool)
    report = rag.ingest(Path("docs/"), "docs", ChunkConfig(chunk_tokens=200, overlap=40, by="tokens"))
    hits = rag.search("docs", "How do I rotate the keys?", top_k=5, filters=Filters(source="docs/*.md"))
    messages = build_messages(question_messages, hits)    # delimited documents, citations [1], [2]
"""

from fmstack.app.rag.chunking import Chunk, ChunkConfig
from fmstack.app.rag.collections import CollectionNotFound
from fmstack.app.rag.ingest import IngestReport
from fmstack.app.rag.retrieve import Filters, Hit
from fmstack.app.rag.service import Rag

__all__ = ["Chunk", "ChunkConfig", "CollectionNotFound", "Filters", "Hit", "IngestReport", "Rag"]
