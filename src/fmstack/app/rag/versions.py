"""Index versions: a collection's vectors re-made by another model (a tuned one, another backend), built beside the
active ones, verified, then switched to in one transaction — never a collection half of one model, half another.

    stage()    a `RagIndexVersion` row (building), every chunk embedded by the new model, an HNSW index of them in
               memory and the vectors saved to FMSTACK_HOME/rag/{uid}/versions/v{N}.npz. Nothing the collection
               searches has changed.
    (verify)   the caller searches with the staged index and embedder (`Staged.search_options`), e.g. recall/MRR on
               held-out questions before and after, and decides.
    switch()   the active vectors are saved as their own version (to switch back to), chunks ingested meanwhile are
               embedded by the new model, then one transaction writes every chunk's vector, the collection's model,
               backend and version, and bumps its generation — only if the collection did not change under it
               (else it catches up and tries again). The index files follow; if they cannot be written, the old
               ones are dropped and the next search rebuilds the index from the store, which is the truth.
    reject()   the staged version is marked rejected (or failed) with the reason; the active one never moved.

`activate(version)` switches back to a kept version the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import bindparam, func, select, text, update

from fmstack.app.rag.collections import get_collection, index_dir, spec_of
from fmstack.app.rag.embedders import EmbedderSpec
from fmstack.app.rag.index import VectorIndex
from fmstack.app.rag.pg_index import vector_dimensions
from fmstack.core.errors import InvalidRequest
from fmstack.core.store.schema import RagChunk, RagCollection, RagIndexVersion, utcnow

EMBED_BATCH = 256
SWITCH_TRIES = 3


class StagedIndex(VectorIndex):
    """A staged version's HNSW index; `staged(ids)` gives its vectors, which retrieval scores similarity with."""

    def staged(self, ids: list[int]) -> np.ndarray:
        return self.vectors(np.asarray(ids, dtype=np.int64))


@dataclass
class Staged:
    """A version built and not yet switched to."""

    collection: str
    collection_id: int
    version: int
    spec: EmbedderSpec
    embed: Callable[[list[str]], np.ndarray]
    index: StagedIndex
    vectors: dict[int, np.ndarray]  # chunk id -> vector
    generation: int  # of the collection when it was built

    def search_options(self) -> dict:
        """`Rag.search` / `evaluate` options that search this version instead of the active one."""
        return {"embed": self.embed, "index": self.index}


def embed_text(heading: str | None, body: str) -> str:
    """A stored chunk as it was embedded (`Chunk.embed_text`): its heading path, then its text."""
    return f"{heading}\n{body}" if heading else body


def versions_dir(rag, collection: RagCollection) -> Path:
    return index_dir(rag.settings.home, collection) / "versions"


def _chunks(rag, collection_id: int, exclude: set[int] | None = None) -> tuple[list[int], list[str]]:
    with rag.sessions() as s:
        rows = s.execute(
            select(RagChunk.id, RagChunk.heading, RagChunk.text)
            .where(RagChunk.collection_id == collection_id)
            .order_by(RagChunk.id)
        ).all()
    rows = [r for r in rows if not exclude or r[0] not in exclude]
    return [r[0] for r in rows], [embed_text(r[1], r[2]) for r in rows]


def _embed_all(embed: Callable[[list[str]], np.ndarray], texts: list[str]) -> np.ndarray:
    parts = [embed(texts[i : i + EMBED_BATCH]) for i in range(0, len(texts), EMBED_BATCH)]
    return np.vstack(parts).astype(np.float32) if parts else np.empty((0, 0), np.float32)


def _save_vectors(path: Path, vectors: dict[int, np.ndarray]) -> None:
    """Atomically write a version's vectors (ids and matrix) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.array(sorted(vectors), dtype=np.int64)
    matrix = np.vstack([vectors[i] for i in ids]) if len(ids) else np.empty((0, 0), np.float32)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, ids=ids, vectors=matrix)
    os.replace(tmp, path)


def _load_vectors(path: Path) -> dict[int, np.ndarray]:
    with np.load(path) as data:
        return dict(zip(data["ids"].tolist(), data["vectors"], strict=True))


def _ensure_active_row(session, collection: RagCollection) -> None:
    """Collections made before versions existed get a row for the version they have."""
    exists = session.scalar(
        select(RagIndexVersion.id).where(
            RagIndexVersion.collection_id == collection.id, RagIndexVersion.version == collection.index_version
        )
    )
    if exists is None:
        spec = spec_of(collection)
        session.add(
            RagIndexVersion(
                collection_id=collection.id,
                version=collection.index_version,
                embedding_model=spec.model,
                embedding_backend=spec.backend,
                embedding_path=spec.path,
                status="active",
                reason="ingest",
                activated_at=collection.created_at,
                report={},
            )
        )


def new_version(rag, collection: str, spec: EmbedderSpec, reason: str) -> int:
    """Reserve the next version number of the collection, as a `building` row."""
    with rag.sessions.begin() as s:
        col = get_collection(s, collection)
        _ensure_active_row(s, col)
        s.flush()
        last = s.scalar(select(func.max(RagIndexVersion.version)).where(RagIndexVersion.collection_id == col.id))
        version = max(last or 0, col.index_version) + 1
        s.add(
            RagIndexVersion(
                collection_id=col.id,
                version=version,
                embedding_model=spec.model,
                embedding_backend=spec.backend,
                embedding_path=spec.path,
                status="building",
                reason=reason,
                report={},
            )
        )
    return version


def set_spec(rag, collection: str, version: int, spec: EmbedderSpec) -> None:
    """Record the model of a version reserved before its model existed (a tuned model's folder is named after it)."""
    with rag.sessions.begin() as s:
        col = get_collection(s, collection)
        row = s.scalar(
            select(RagIndexVersion).where(RagIndexVersion.collection_id == col.id, RagIndexVersion.version == version)
        )
        row.embedding_model, row.embedding_backend, row.embedding_path = spec.model, spec.backend, spec.path


def stage(rag, collection: str, spec: EmbedderSpec, reason: str, version: int | None = None) -> Staged:
    """Build a version of the collection's vectors by `spec`'s model, beside the active one."""
    spec.check()
    version = version or new_version(rag, collection, spec, reason)
    try:
        col = rag.collection(collection)
        embed = rag.embedder(spec)
        ids, texts = _chunks(rag, col.id)
        if not ids:
            raise InvalidRequest(f"Collection '{collection}' has no chunks to embed.", param="collection")
        matrix = _embed_all(embed, texts)
        if matrix.shape[1] != col.dimensions:
            raise InvalidRequest(
                f"{spec.describe()} makes {matrix.shape[1]}-dimensional vectors; collection '{collection}' has "
                f"{col.dimensions}.",
            )
        vectors = dict(zip(ids, matrix, strict=True))
        _save_vectors(versions_dir(rag, col) / f"v{version}.npz", vectors)
    except Exception as exc:
        reject(rag, collection, version, f"failed: {exc}", status="failed")
        raise
    return Staged(collection, col.id, version, spec, embed, _index(col.dimensions, vectors), vectors, col.generation)


def _index(dims: int, vectors: dict[int, np.ndarray]) -> StagedIndex:
    index = StagedIndex(dims, capacity=len(vectors) + 1024)
    if vectors:
        index.add(np.array(list(vectors), dtype=np.int64), np.vstack(list(vectors.values())))
    return index


def reject(rag, collection: str, version: int, reason: str, status: str = "rejected", report: dict | None = None):
    """Mark a staged version as not switched to, with why; the active version is untouched."""
    with rag.sessions.begin() as s:
        col = get_collection(s, collection)
        row = s.scalar(
            select(RagIndexVersion).where(RagIndexVersion.collection_id == col.id, RagIndexVersion.version == version)
        )
        if row is not None:
            row.status, row.reason = status, reason
            row.report = report or row.report


def switch(rag, staged: Staged, report: dict | None = None) -> int:
    """Make the staged version the collection's, atomically (see the module's docstring); the new generation."""
    col = rag.collection(staged.collection)
    previous = versions_dir(rag, col) / f"v{col.index_version}.npz"
    if not previous.exists():  # the active vectors, kept to switch back to
        ids, blobs = _stored_vectors(rag, col.id)
        _save_vectors(previous, dict(zip(ids, blobs, strict=True)))
    for _ in range(SWITCH_TRIES):
        try:
            _catch_up(rag, staged)
            generation = _commit(rag, staged, report or {})
        except Exception as exc:  # the transaction rolled back: the active version is whole
            reject(rag, staged.collection, staged.version, f"failed: switching: {exc}", "failed")
            raise
        if generation is not None:
            try:
                rag.save_index(col.uid, _index(col.dimensions, staged.vectors), generation)
            except OSError:  # the store switched: drop the old index files, so the next search rebuilds from it
                (index_dir(rag.settings.home, col) / "index.json").unlink(missing_ok=True)
            return generation
    reject(rag, staged.collection, staged.version, "the collection kept changing during the switch", "failed")
    raise InvalidRequest(f"Collection '{staged.collection}' kept changing while switching versions; try again.")


def _stored_vectors(rag, collection_id: int) -> tuple[list[int], list[np.ndarray]]:
    with rag.sessions() as s:
        rows = s.execute(select(RagChunk.id, RagChunk.embedding).where(RagChunk.collection_id == collection_id)).all()
    return [r[0] for r in rows], [np.frombuffer(r[1], np.float32) for r in rows]


def _catch_up(rag, staged: Staged) -> None:
    """Embed, by the staged model, chunks ingested since it was built; forget the ones deleted since."""
    current, _ = _chunks(rag, staged.collection_id)
    live = set(current)
    for gone in [i for i in staged.vectors if i not in live]:
        del staged.vectors[gone]
    ids, texts = _chunks(rag, staged.collection_id, exclude=set(staged.vectors))
    if ids:
        staged.vectors.update(zip(ids, _embed_all(staged.embed, texts), strict=True))
    with rag.sessions() as s:
        staged.generation = s.get(RagCollection, staged.collection_id).generation


def _commit(rag, staged: Staged, report: dict) -> int | None:
    """The one transaction of a switch; None when the collection changed since `_catch_up` looked."""
    with rag.sessions.begin() as s:
        moved = s.execute(
            update(RagCollection)
            .where(RagCollection.id == staged.collection_id, RagCollection.generation == staged.generation)
            .values(generation=staged.generation + 1)
        )
        if moved.rowcount != 1:
            return None
        chunks = RagChunk.__table__
        s.execute(
            update(chunks).where(chunks.c.id == bindparam("chunk_id")).values(embedding=bindparam("vector")),
            [{"chunk_id": i, "vector": v.astype(np.float32).tobytes()} for i, v in staged.vectors.items()],
        )
        if vector_dimensions(s)[0] is not None:  # pgvector: refilled from `embedding` when the index reopens
            s.execute(text("UPDATE rag_chunks SET embedding_vector = NULL WHERE collection_id = :c"),
                      {"c": staged.collection_id})  # fmt: skip
        col = s.get(RagCollection, staged.collection_id)
        for row in s.scalars(select(RagIndexVersion).where(RagIndexVersion.collection_id == col.id)):
            if row.version == staged.version:
                row.status, row.activated_at = "active", utcnow()
                row.report = report or row.report
            elif row.status == "active":
                row.status = "previous"
        col.embedding_backend, col.embedding_path = staged.spec.backend, staged.spec.path
        col.index_version, col.updated_at = staged.version, utcnow()
        return col.generation


def activate(rag, collection: str, version: int) -> int:
    """Switch back (or forward) to a kept version: its saved vectors, chunks added since embedded by its model."""
    with rag.sessions() as s:
        col = get_collection(s, collection)
        row = s.scalar(
            select(RagIndexVersion).where(RagIndexVersion.collection_id == col.id, RagIndexVersion.version == version)
        )
    path = versions_dir(rag, col) / f"v{version}.npz"
    if row is None or not path.exists():
        raise InvalidRequest(f"Collection '{collection}' has no kept version {version} (see `fmstack rag versions`).")
    if row.version == col.index_version:
        raise InvalidRequest(f"Version {version} is already the active one.")
    spec = EmbedderSpec(row.embedding_model, row.embedding_backend, row.embedding_path)
    vectors = _load_vectors(path)
    staged = Staged(collection, col.id, version, spec, rag.embedder(spec), _index(col.dimensions, vectors), vectors,
                    col.generation)  # fmt: skip
    return switch(rag, staged, row.report)


def list_versions(rag, collection: str) -> list[dict]:
    with rag.sessions.begin() as s:
        col = get_collection(s, collection)
        _ensure_active_row(s, col)
        s.flush()
        rows = s.scalars(
            select(RagIndexVersion).where(RagIndexVersion.collection_id == col.id).order_by(RagIndexVersion.version)
        ).all()
        return [
            {
                "version": r.version,
                "status": r.status,
                "backend": r.embedding_backend,
                "model": r.embedding_path or r.embedding_model,
                "reason": r.reason,
                "created_at": r.created_at.isoformat() if r.created_at else None,
                "report": r.report,
            }
            for r in rows
        ]


def reembed(rag, collection: str, backend: str, questions: list | None = None) -> dict:
    """Re-make every vector of the collection with the registry model on `backend` as a new version; with a question
    set, switch only if recall@10 stays within 0.01 (one question of slack) and MRR within 0.01 of the active one."""
    from fmstack.app.rag.evaluate import evaluate

    col = rag.collection(collection)
    spec = EmbedderSpec(col.embedding_model, backend).check()
    if spec == spec_of(col):
        raise InvalidRequest(f"Collection '{collection}' is already embedded by {spec.describe()}.", param="backend")
    before = evaluate(rag, collection, questions) if questions else None
    staged = stage(rag, collection, spec, f"reembed --backend {backend}")
    report: dict = {"backend": backend, "chunks": len(staged.vectors)}
    if before is not None:
        after = evaluate(rag, collection, questions, **staged.search_options())
        report |= {"before": {"recall": before.recall, "mrr": before.mrr}, "after": {"recall": after.recall,
                   "mrr": after.mrr}}  # fmt: skip
        slack = 0.01 + 1 / max(before.questions, 1)
        if after.recall["@10"] < before.recall["@10"] - slack or after.mrr < before.mrr - 0.01:
            reject(rag, collection, staged.version, "rejected: retrieval got worse on the question set", report=report)
            return report | {"version": staged.version, "switched": False}
    switch(rag, staged, report)
    return report | {"version": staged.version, "switched": True}
