"""Collections in the store: find, create, list with counts, delete (with their index files)."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fmstack.app.rag.embedders import EmbedderSpec
from fmstack.core.errors import InvalidRequest, NotFound
from fmstack.core.store.schema import RagChunk, RagCollection, RagDocument, utcnow

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class CollectionNotFound(NotFound):
    def __init__(self, name: str, known: list[str]):
        hint = f"Known collections: {', '.join(sorted(known))}." if known else "There are no collections yet."
        super().__init__(
            f"No collection named '{name}'. {hint} Create one with `fmstack rag ingest PATH --collection {name}`.",
            param="collection",
            code="collection_not_found",
        )


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise InvalidRequest(
            f"Invalid collection name '{name}': use letters, digits, '.', '_' and '-' (at most 100 characters).",
            param="collection",
        )
    return name


def get_collection(session: Session, name: str) -> RagCollection:
    row = session.scalar(select(RagCollection).where(RagCollection.name == name))
    if row is None:
        raise CollectionNotFound(name, list(session.scalars(select(RagCollection.name))))
    return row


def spec_of(collection: RagCollection) -> EmbedderSpec:
    """The model that made (and must make) every vector of the collection."""
    return EmbedderSpec(collection.embedding_model, collection.embedding_backend or "sentence-transformers",
                        collection.embedding_path)  # fmt: skip


def get_or_create(
    session: Session, name: str, spec: EmbedderSpec, dimensions: Callable[[], int], config: dict, backend_asked: bool
) -> RagCollection:
    """The collection, created on first use with `spec` (`dimensions` is only asked then: it loads the model). An
    existing collection keeps its own model: asking for another (`backend_asked`) is refused, never mixed in."""
    check_name(name)
    row = session.scalar(select(RagCollection).where(RagCollection.name == name))
    if row is not None:
        if row.embedding_model != spec.model:
            raise InvalidRequest(
                f"Collection '{name}' was embedded with '{row.embedding_model}', not '{spec.model}'; "
                "ingest into a new collection to change the model.",
                param="collection",
            )
        if backend_asked and row.embedding_backend != spec.backend:
            raise InvalidRequest(
                f"Collection '{name}' holds vectors made by the {row.embedding_backend} backend, not {spec.backend}: "
                f"one collection never mixes models. Re-embed it all with "
                f"`fmstack rag reembed --collection {name} --backend {spec.backend}`.",
                param="backend",
            )
        return row
    row = RagCollection(
        uid=uuid.uuid4().hex,
        name=name,
        embedding_model=spec.model,
        embedding_backend=spec.backend,
        embedding_path=spec.path,
        index_version=1,
        dimensions=dimensions(),
        generation=0,
        config=config,
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def list_collections(session: Session) -> list[dict]:
    docs = dict(
        session.execute(select(RagDocument.collection_id, func.count()).group_by(RagDocument.collection_id)).all()
    )
    chunks = dict(session.execute(select(RagChunk.collection_id, func.count()).group_by(RagChunk.collection_id)).all())
    return [
        {
            "name": c.name,
            "documents": docs.get(c.id, 0),
            "chunks": chunks.get(c.id, 0),
            "embedding_model": c.embedding_model,
            "backend": c.embedding_backend + (" (tuned)" if c.embedding_path else ""),
            "index_version": c.index_version,
            "min_similarity": c.min_similarity,
            "updated_at": c.updated_at.isoformat(),
        }
        for c in session.scalars(select(RagCollection).order_by(RagCollection.name))
    ]


def index_dir(home: Path, collection: RagCollection) -> Path:
    return home / "rag" / collection.uid


def delete_collection(session: Session, home: Path, name: str) -> None:
    collection = get_collection(session, name)
    session.delete(collection)  # documents and chunks go by ON DELETE CASCADE (and the FTS rows by trigger)
    session.flush()
    shutil.rmtree(index_dir(home, collection), ignore_errors=True)
