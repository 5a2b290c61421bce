"""RAG: collections, documents and chunks (with their embeddings), the keyword index, retrieval on traces.

The keyword index is SQLite FTS5 (bm25) on SQLite, kept in step with `rag_chunks` by triggers, and a stored
`tsvector` column with a GIN index on PostgreSQL. The vector index lives in files beside the store
(`fmstack.app.rag.index`), rebuilt from the embeddings stored here whenever it is missing or stale.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FTS_TRIGGERS = {
    "rag_chunks_ai": "AFTER INSERT ON rag_chunks BEGIN "
    "INSERT INTO rag_chunks_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text); END",
    "rag_chunks_ad": "AFTER DELETE ON rag_chunks BEGIN "
    "INSERT INTO rag_chunks_fts(rag_chunks_fts, rowid, heading, text) VALUES ('delete', old.id, old.heading, old.text);"
    " END",
    "rag_chunks_au": "AFTER UPDATE OF heading, text ON rag_chunks BEGIN "
    "INSERT INTO rag_chunks_fts(rag_chunks_fts, rowid, heading, text) VALUES ('delete', old.id, old.heading, old.text);"
    " INSERT INTO rag_chunks_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text); END",
}


def upgrade() -> None:
    op.create_table(
        "rag_collections",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("uid", sa.String(32), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("embedding_model", sa.String(200), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
    )
    op.create_table(
        "rag_documents",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "collection_id", sa.Integer(), sa.ForeignKey("rag_collections.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("chunking", sa.String(200), nullable=False),
        sa.Column("title", sa.Text()),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("collection_id", "path", name="uq_rag_documents_collection_path"),
    )
    op.create_index("ix_rag_documents_collection_id", "rag_documents", ["collection_id"])
    op.create_table(
        "rag_chunks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "collection_id", sa.Integer(), sa.ForeignKey("rag_collections.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("document_id", sa.Integer(), sa.ForeignKey("rag_documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("heading", sa.Text()),
        sa.Column("char_start", sa.Integer(), nullable=False),
        sa.Column("char_end", sa.Integer(), nullable=False),
        sa.Column("page", sa.Integer()),
        sa.Column("page_end", sa.Integer()),
        sa.Column("line", sa.Integer()),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("document_id", "sha256", name="uq_rag_chunks_document_sha256"),
        sqlite_autoincrement=True,  # chunk ids are vector index keys: never reused
    )
    op.create_index("ix_rag_chunks_collection_id", "rag_chunks", ["collection_id"])
    op.create_index("ix_rag_chunks_document_id", "rag_chunks", ["document_id"])
    op.create_index("ix_rag_chunks_collection_sha256", "rag_chunks", ["collection_id", "sha256"])
    op.add_column("traces", sa.Column("retrieval", sa.JSON()))

    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE rag_chunks_fts USING fts5(heading, text, content='rag_chunks', "
            "content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')"
        )
        for name, body in FTS_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
    elif dialect == "postgresql":
        op.execute(
            "ALTER TABLE rag_chunks ADD COLUMN tsv tsvector GENERATED ALWAYS AS "
            "(setweight(to_tsvector('english', coalesce(heading, '')), 'B') || "
            "setweight(to_tsvector('english', text), 'A')) STORED"
        )
        op.execute("CREATE INDEX ix_rag_chunks_tsv ON rag_chunks USING gin (tsv)")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in FTS_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS rag_chunks_fts")
    with op.batch_alter_table("traces") as batch:
        batch.drop_column("retrieval")
    for table in ("rag_chunks", "rag_documents", "rag_collections"):
        op.drop_table(table)
