"""A/B routes: a public name split between weighted variants (registry models; a column for a stored prompt ref
is kept for prompt routes), and every change of a split (create, split, promote, rollback, delete) with the weights
before and after.

Revision ID: 0009
Revises: 0008

Only tables are added: no existing row is rewritten.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


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


def downgrade() -> None:
    for table in ("ab_changes", "ab_variants", "ab_routes"):
        op.drop_table(table)
