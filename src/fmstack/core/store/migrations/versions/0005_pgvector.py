"""RAG vectors in PostgreSQL with pgvector, so that server replicas sharing one database share one vector index.

On PostgreSQL whose server has the `vector` extension (0.5 or newer, for HNSW), `rag_chunks` gets
`embedding_vector vector(384)` (the packaged MiniLM's dimensions) with an HNSW index on cosine distance (the
graph parameters of the hnswlib files: M 16, ef_construction 128) and a partial index on the chunks that have no
vector yet, which `fmstack.app.rag.pg_index` fills from `embedding` (rows stored before this migration, or by a
run that stopped between its two commits). Without the extension, or without the right to create it, nothing
changes and the vectors stay in hnswlib files; the application says why when it opens the store. SQLite is
untouched.

Revision ID: 0005
Revises: 0004
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

DIMENSIONS = 384
log = logging.getLogger(__name__)


def _has_hnsw(bind: sa.Connection) -> bool:
    version = bind.execute(
        sa.text("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
    ).scalar()
    return version is not None and tuple(int(p) for p in version.split(".")[:2]) >= (0, 5)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not _has_hnsw(bind):
        return
    try:
        with bind.begin_nested():  # a role that may not create extensions must not fail the whole migration
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
    except sa.exc.DBAPIError as exc:
        log.warning("pgvector: CREATE EXTENSION vector failed (%s); RAG vectors stay in index files", exc.orig)
        return
    op.execute(f"ALTER TABLE rag_chunks ADD COLUMN embedding_vector vector({DIMENSIONS})")
    op.execute(
        "CREATE INDEX ix_rag_chunks_embedding_vector ON rag_chunks "
        "USING hnsw (embedding_vector vector_cosine_ops) WITH (m = 16, ef_construction = 128)"
    )
    op.execute("CREATE INDEX ix_rag_chunks_vector_missing ON rag_chunks (collection_id) WHERE embedding_vector IS NULL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_rag_chunks_vector_missing")
        op.execute("DROP INDEX IF EXISTS ix_rag_chunks_embedding_vector")
        op.execute("ALTER TABLE rag_chunks DROP COLUMN IF EXISTS embedding_vector")
