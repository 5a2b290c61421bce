"""Retrieval-augmented generation: ingest documents into collections, retrieve passages (keyword + vector, fused),
and answer grounded in them, with citations, or say "I don't know".

`loaders` (files to text with structure) → `chunking` → `ingest` (incremental, by content hash) into
`collections` in the store; vectors in `index` (hnswlib files) or `pg_index` (pgvector), kept loaded by
`index_cache`; `keyword` (full-text search) and `retrieve` (fusion, filters, rerankers); `answer` (grounded
messages), `chat` (a grounded turn through the gateway, traced with its retrieval); `evaluate` (recall@k, MRR),
`corpus` (the example corpus) and `rag_client` (the terminal's client of the server's RAG route). `Rag`
(`service`) puts them together over one store and one embedding model.

```python
from pathlib import Path

from fmstack.app.rag import ChunkConfig, Filters, Rag
from fmstack.app.rag.answer import ground
from fmstack.core.config import get_settings
from fmstack.core.registry import Registry
from fmstack.core.store import open_store
from fmstack.engines.pool import EnginePool

settings = get_settings()
rag = Rag(open_store(settings), settings, EnginePool(Registry(settings), settings))
report = rag.ingest(Path("docs/"), "docs", ChunkConfig(chunk_tokens=200, overlap=40, by="tokens"))
hits = rag.search("docs", "How do I rotate the keys?", top_k=5, filters=Filters(source="docs/*.md"))
grounding = ground([{"role": "user", "content": "How do I rotate the keys?"}], hits)  # documents, citations [1]…
```

Layer: imports `fmstack.gateway`, `fmstack.engines` (the embedding model, message types) and `fmstack.core`;
the server and the CLI import it.
"""

from fmstack.app.rag.chunking import Chunk, ChunkConfig
from fmstack.app.rag.collections import CollectionNotFound
from fmstack.app.rag.ingest import IngestReport
from fmstack.app.rag.retrieve import Filters, Hit
from fmstack.app.rag.service import Rag

__all__ = ["Chunk", "ChunkConfig", "CollectionNotFound", "Filters", "Hit", "IngestReport", "Rag"]
