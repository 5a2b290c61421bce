"""Versioned prompts: versions, aliases and alias moves; traces say which prompt version they came from.

Revision ID: 0003
Revises: 0002

`traces.prompt_version` exists since 0001 (text, never written before); this adds `traces.prompt_name` beside it.
Only tables and columns are added, so no existing row is rewritten or lost.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prompt_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("system", sa.Text()),
        sa.Column("user", sa.Text()),
        sa.Column("examples", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("note", sa.Text()),
        sa.UniqueConstraint("name", "version", name="uq_prompt_versions_name_version"),
    )
    op.create_index("ix_prompt_versions_name", "prompt_versions", ["name"])
    op.create_table(
        "prompt_aliases",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["name", "version"], ["prompt_versions.name", "prompt_versions.version"]),
    )
    op.create_table(
        "prompt_alias_moves",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("from_version", sa.Integer()),
        sa.Column("to_version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_prompt_alias_moves_name", "prompt_alias_moves", ["name"])
    op.add_column("traces", sa.Column("prompt_name", sa.String(200)))
    op.create_index("ix_traces_prompt_name", "traces", ["prompt_name"])


def downgrade() -> None:
    op.drop_index("ix_traces_prompt_name", "traces")
    op.drop_column("traces", "prompt_name")  # in place (SQLite >= 3.35): rebuilding traces would cascade
    for table in ("prompt_alias_moves", "prompt_aliases", "prompt_versions"):
        op.drop_table(table)
