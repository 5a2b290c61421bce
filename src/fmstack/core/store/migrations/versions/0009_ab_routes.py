"""A/B routes: a public name split between weighted variants (registry models; a column for a stored prompt ref
is kept for prompt routes), and every change of a split (create, split, promote, rollback, delete) with the weights
before and after. Plus a covering index on the traces for the dashboard: its aggregates over a time range then read
the index alone, never the trace rows (which carry the request and the answer).

Revision ID: 0009
Revises: 0008

Only tables and an index are added: no existing row is rewritten.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

DASHBOARD = ("created_at", "app", "route", "variant", "status", "latency_ms", "ttft_ms")
DASHBOARD += ("prompt_tokens", "completion_tokens", "cost", "id")


def upgrade() -> None:
    op.create_table(
        "ab_routes",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ab_variants",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("route", sa.String(200), sa.ForeignKey("ab_routes.name", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("prompt", sa.String(200)),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.UniqueConstraint("route", "name", name="uq_ab_variants_route_name"),
    )
    op.create_index("ix_ab_variants_route", "ab_variants", ["route"])
    op.create_table(
        "ab_changes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("before", sa.JSON()),
        sa.Column("after", sa.JSON()),
        sa.Column("undoes", sa.Integer()),
        sa.Column("actor", sa.String(200)),
        sa.Column("gate", sa.JSON()),
    )
    op.create_index("ix_ab_changes_route", "ab_changes", ["route"])
    op.create_index("ix_traces_dashboard", "traces", list(DASHBOARD))


def downgrade() -> None:
    op.drop_index("ix_traces_dashboard", "traces")
    for table in ("ab_changes", "ab_variants", "ab_routes"):
        op.drop_table(table)
