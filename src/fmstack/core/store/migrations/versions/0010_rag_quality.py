"""RAG quality: per-collection embedding backend, tuned model and index version, a calibrated "I don't know"
threshold, and the index versions themselves (a new set of vectors is built beside the active one, verified, then
switched to atomically; the one it replaced is kept to switch back to).

Revision ID: 0010
Revises: 0009

Existing collections keep what they had: sentence-transformers MiniLM, version 1, the global threshold.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rag_collections") as batch:
        batch.add_column(
            sa.Column("embedding_backend", sa.String(32), nullable=False, server_default="sentence-transformers")
        )
        batch.add_column(sa.Column("embedding_path", sa.Text(), nullable=True))
        batch.add_column(sa.Column("index_version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("min_similarity", sa.Float(), nullable=True))
        batch.add_column(sa.Column("calibration", sa.JSON(), nullable=True))
    op.create_table(
        "rag_index_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "collection_id", sa.Integer(), sa.ForeignKey("rag_collections.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("embedding_model", sa.String(200), nullable=False),
        sa.Column("embedding_backend", sa.String(32), nullable=False),
        sa.Column("embedding_path", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.UniqueConstraint("collection_id", "version", name="uq_rag_index_versions_collection_version"),
    )
    op.create_index("ix_rag_index_versions_collection_id", "rag_index_versions", ["collection_id"])


def downgrade() -> None:
    op.drop_index("ix_rag_index_versions_collection_id", "rag_index_versions")
    op.drop_table("rag_index_versions")
    with op.batch_alter_table("rag_collections") as batch:
        for name in ("calibration", "min_similarity", "index_version", "embedding_path", "embedding_backend"):
            batch.drop_column(name)
