"""Ingestion: files to chunks to embeddings, stored in the collection, incrementally.

Re-ingesting a PATH compares content hashes: an unchanged file (same sha256, same chunking) is not even parsed;
a changed file is chunked again and only its chunks whose text is new are embedded (a chunk whose text already
exists in the collection, in this file or another, takes that embedding); its chunks that are gone are removed;
files that were ingested from PATH and no longer exist are removed. (document, chunk hash) is unique, so a chunk
is never stored twice. A file that cannot be read is reported with the reason and skipped (a file that was
ingested before keeps its previous version). Work is committed in batches, each with the chunks' embeddings;
then the vector index is updated: in memory and saved atomically at the end, or in PostgreSQL (pgvector).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from fmstack.app.rag.chunking import Chunk, ChunkConfig, chunk_document
from fmstack.app.rag.collections import get_or_create, spec_of
from fmstack.app.rag.index import Index
from fmstack.app.rag.loaders import Unreadable, file_format, parse_file
from fmstack.core.errors import InvalidRequest
from fmstack.core.store.schema import RagChunk, RagCollection, RagDocument, utcnow

Progress = Callable[[int, int, str], None]  # (files done, files in all, current file)


@dataclass
class IngestReport:
    collection: str
    files: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_kept: int = 0
    chunks_embedded: int = 0  # new chunk texts, run through the embedding model
    chunks_reused: int = 0  # new chunks whose text (and so embedding) the collection already had
    chunks_total: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    seconds: float = 0.0
    embed_seconds: float = 0.0

    def as_dict(self) -> dict:
        return {k: (list(map(list, v)) if k == "skipped" else v) for k, v in self.__dict__.items()}


@dataclass
class _FileWork:
    path: Path
    root: str
    source: str
    fmt: str
    sha256: str
    size: int
    title: str | None
    meta: dict
    chunks: list[Chunk]
    existing: RagDocument | None


@dataclass
class _Embeddings:
    """Where a new chunk's embedding comes from: just embedded (`fresh`), or an identical text's stored one."""

    fresh: dict[str, bytes]
    reuse: dict[str, bytes]

    def of(self, sha: str) -> bytes:
        return self.fresh.get(sha) or self.reuse[sha]


@dataclass
class _IndexChanges:
    """What a batch added to and deleted from the store, for the vector index once the batch is committed."""

    added: list[int] = field(default_factory=list)
    vectors: list[bytes] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)

    def add(self, rows: list[RagChunk]) -> None:
        self.added += [r.id for r in rows]
        self.vectors += [r.embedding for r in rows]

    def apply(self, index: Index) -> None:
        if self.removed:
            index.remove(np.array(self.removed, dtype=np.int64))
        if self.added:
            matrix = np.frombuffer(b"".join(self.vectors), dtype=np.float32).reshape(len(self.added), -1)
            index.add(np.array(self.added, dtype=np.int64), matrix)


def walk(path: Path) -> Iterator[Path]:
    """Every file under `path` (or `path` itself), sorted, hidden files and folders left out."""
    if path.is_file():
        yield path
        return
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


class Ingestor:
    """One ingestion run into one collection. `embed` maps texts to unit vectors; `index` is the collection's
    vector index (see `fmstack.app.rag.index`)."""

    def __init__(
        self,
        rag,
        collection: str,
        config: ChunkConfig,
        text_field: str = "text",
        batch: int = 256,
        backend: str | None = None,
    ):
        self.rag = rag
        self.name = collection
        self.config = config
        self.text_field = text_field
        self.batch = batch
        self.backend = backend
        self.embed = rag.embed  # the collection's own embedder, once it is known (`run`)

    def run(self, path: Path, progress: Progress | None = None) -> IngestReport:
        started = time.perf_counter()
        path = Path(path).expanduser()
        if not path.exists():
            raise InvalidRequest(f"{path}: no such file or folder.", param="path")
        root = path.resolve()
        files = list(walk(root))
        report = IngestReport(self.name, files=len(files))
        progress = progress or (lambda done, total, name: None)
        tokenizer = self.rag.tokenizer()
        self.config.check(self.rag.max_chunk_tokens())
        sessions = self.rag.sessions
        with sessions.begin() as s:
            spec = self.rag.default_spec(self.backend)
            config = {"last_chunking": self.config.key}
            collection = get_or_create(s, self.name, spec, self.rag.dimensions, config, self.backend is not None)
            cid, uid = collection.id, collection.uid
            self.embed = self.rag.embedder(spec_of(collection))
            known = {d.path: d for d in s.scalars(select(RagDocument).where(RagDocument.collection_id == cid))}
            s.expunge_all()
        index = self.rag.open_index_for_update(cid)
        pending: list[_FileWork] = []
        seen_paths: set[str] = set()
        for done, file in enumerate(files):
            progress(done, len(files), file.name)
            key = str(file)
            seen_paths.add(key)
            work = self._prepare(file, root, known.get(key), tokenizer, report)
            if work is None:
                continue
            pending.append(work)
            if sum(len(w.chunks) for w in pending) >= self.batch:
                self._commit(cid, pending, index, report)
                pending = []
        if pending:
            self._commit(cid, pending, index, report)
        gone = [d for p, d in known.items() if d.root == str(root) and p not in seen_paths]
        if gone:
            self._remove(cid, gone, index, report)
        progress(len(files), len(files), "")
        with sessions.begin() as s:
            collection = s.get(RagCollection, cid)
            changed = report.added + report.updated + report.removed
            if changed:
                collection.generation += 1
                collection.updated_at = utcnow()
            generation = collection.generation
            report.chunks_total = s.query(RagChunk).filter(RagChunk.collection_id == cid).count()
        if changed or index.generation != generation:
            self.rag.save_index(uid, index, generation)
        report.seconds = time.perf_counter() - started
        return report

    def _prepare(self, file: Path, root: Path, existing, tokenizer, report: IngestReport) -> _FileWork | None:
        source = str(file.relative_to(root.parent))
        fmt = file_format(file)
        try:
            data = file.read_bytes()
        except OSError as exc:
            report.skipped.append((source, f"cannot read ({exc.strerror or exc})"))
            return None
        sha = hashlib.sha256(data).hexdigest()
        if existing is not None and existing.sha256 == sha and existing.chunking == self.config.key:
            report.unchanged += 1
            return None
        try:
            parsed = parse_file(file, data, self.text_field)
            chunks = chunk_document(parsed, self.config, tokenizer)
        except Unreadable as exc:
            report.skipped.append((source, str(exc)))
            return None
        except Exception as exc:  # a parser bug on one odd file must not stop the run
            report.skipped.append((source, f"could not be parsed ({type(exc).__name__}: {exc})"))
            return None
        if not chunks:
            report.skipped.append((source, "no text to index"))
            return None
        unique: dict[str, Chunk] = {}
        for chunk in chunks:
            unique.setdefault(chunk.sha256, chunk)  # a repeated passage adds nothing; stored once per document
        meta = dict(parsed.meta) | {"format": fmt}
        return _FileWork(
            file, str(root), source, fmt or "", sha, len(data), parsed.title, meta, list(unique.values()), existing
        )

    def _commit(self, cid: int, pending: list[_FileWork], index: Index, report: IngestReport) -> None:
        """Embed what is new in these files, then store them in one transaction and update the index."""
        with self.rag.sessions() as s:
            stored = _stored_chunks(s, [w.existing.id for w in pending if w.existing is not None])
            reuse = _embeddings_by_hash(s, cid, {c.sha256 for w in pending for c in w.chunks})
        embeddings = _Embeddings(self._embed(_texts_to_embed(pending, stored, reuse), report), reuse)
        changes = _IndexChanges()
        with self.rag.sessions.begin() as s:
            for w in pending:
                doc = self._store_document(s, cid, w, report)
                kept = stored.get(doc.id, {})
                changes.removed += _delete_gone_chunks(s, w.chunks, kept, report)
                changes.add(_store_chunks(s, doc, w.chunks, kept, embeddings, report))
            s.get(RagCollection, cid).generation += 1
        changes.apply(index)

    def _embed(self, texts: dict[str, str], report: IngestReport) -> dict[str, bytes]:
        """Embeddings of chunk texts by chunk hash, as stored (float32 bytes)."""
        if not texts:
            return {}
        started = time.perf_counter()
        vectors = self.embed(list(texts.values()))
        report.embed_seconds += time.perf_counter() - started
        report.chunks_embedded += len(texts)
        return {sha: v.astype(np.float32).tobytes() for sha, v in zip(texts, vectors, strict=True)}

    def _store_document(self, s: Session, cid: int, w: _FileWork, report: IngestReport) -> RagDocument:
        """The file's document row, added or updated to this version of the file, with its id assigned."""
        now = utcnow()
        if w.existing is None:
            doc = RagDocument(collection_id=cid, path=str(w.path), created_at=now)
            s.add(doc)
            report.added += 1
        else:
            doc = s.get(RagDocument, w.existing.id)
            report.updated += 1
        doc.root = w.root
        doc.source, doc.format, doc.sha256, doc.size = w.source, w.fmt, w.sha256, w.size
        doc.chunking, doc.title, doc.meta, doc.updated_at = self.config.key, w.title, w.meta, now
        s.flush()
        return doc

    def _remove(self, cid: int, docs: list[RagDocument], index: Index, report: IngestReport) -> None:
        with self.rag.sessions.begin() as s:
            ids = [d.id for d in docs]
            chunk_ids = list(s.scalars(select(RagChunk.id).where(RagChunk.document_id.in_(ids))))
            s.execute(delete(RagChunk).where(RagChunk.document_id.in_(ids)))
            s.execute(delete(RagDocument).where(RagDocument.id.in_(ids)))
            s.get(RagCollection, cid).generation += 1
        report.removed += len(docs)
        report.chunks_removed += len(chunk_ids)
        if chunk_ids:
            index.remove(np.array(chunk_ids, dtype=np.int64))


def _stored_chunks(s: Session, doc_ids: list[int]) -> dict[int, dict[str, int]]:
    """The chunks these documents have now: document id -> chunk hash -> chunk id."""
    stored: dict[int, dict[str, int]] = {}
    if doc_ids:
        rows = s.execute(
            select(RagChunk.id, RagChunk.document_id, RagChunk.sha256).where(RagChunk.document_id.in_(doc_ids))
        )
        for chunk_id, doc_id, sha in rows:
            stored.setdefault(doc_id, {})[sha] = chunk_id
    return stored


def _embeddings_by_hash(s: Session, cid: int, shas: set[str]) -> dict[str, bytes]:
    """Embeddings the collection already has for these chunk texts (in any document), by chunk hash."""
    found: dict[str, bytes] = {}
    wanted = list(shas)
    for i in range(0, len(wanted), 500):
        rows = s.execute(
            select(RagChunk.sha256, RagChunk.embedding).where(
                RagChunk.collection_id == cid, RagChunk.sha256.in_(wanted[i : i + 500])
            )
        )
        for sha, blob in rows:
            found.setdefault(sha, blob)
    return found


def _texts_to_embed(
    pending: list[_FileWork], stored: dict[int, dict[str, int]], reuse: dict[str, bytes]
) -> dict[str, str]:
    """The texts to embed, by chunk hash: chunks neither kept in their document nor found elsewhere."""
    texts: dict[str, str] = {}
    for w in pending:
        kept = stored.get(w.existing.id, {}) if w.existing else {}
        for c in w.chunks:
            if c.sha256 not in kept and c.sha256 not in reuse:
                texts.setdefault(c.sha256, c.embed_text)
    return texts


def _delete_gone_chunks(s: Session, chunks: list[Chunk], kept: dict[str, int], report: IngestReport) -> list[int]:
    """Delete the document's chunks that this version of the file no longer has; their ids."""
    current = {c.sha256 for c in chunks}
    gone = [chunk_id for sha, chunk_id in kept.items() if sha not in current]
    if gone:
        s.execute(delete(RagChunk).where(RagChunk.id.in_(gone)))
        report.chunks_removed += len(gone)
    return gone


def _store_chunks(
    s: Session,
    doc: RagDocument,
    chunks: list[Chunk],
    kept: dict[str, int],
    embeddings: _Embeddings,
    report: IngestReport,
) -> list[RagChunk]:
    """Update the chunks the document keeps (their place in it may have moved) and add the new ones; the added rows,
    with their ids."""
    rows = []
    for ordinal, c in enumerate(chunks):
        fields = _chunk_fields(ordinal, c)
        if c.sha256 in kept:
            s.execute(RagChunk.__table__.update().where(RagChunk.id == kept[c.sha256]).values(**fields))
            report.chunks_kept += 1
            continue
        if c.sha256 not in embeddings.fresh:
            report.chunks_reused += 1
        rows.append(
            RagChunk(
                collection_id=doc.collection_id,
                document_id=doc.id,
                sha256=c.sha256,
                embedding=embeddings.of(c.sha256),
                **fields,
            )
        )
    s.add_all(rows)
    s.flush()
    report.chunks_added += len(rows)
    return rows


def _chunk_fields(ordinal: int, c: Chunk) -> dict:
    """A chunk row's columns that say where the chunk is and what it holds (all but its identity and embedding)."""
    return dict(
        ordinal=ordinal,
        text=c.text,
        heading=c.heading_text,
        char_start=c.start,
        char_end=c.end,
        page=c.page,
        page_end=c.page_end,
        line=c.line,
        tokens=c.tokens,
        meta=c.meta,
    )
