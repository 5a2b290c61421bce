"""Human review: review policies per app (crawl, walk, run), the history of their stage moves, and the review
queue (held crawl answers among its items, so a restart loses none).

Revision ID: 0008
Revises: 0007

Only tables are added: no existing row is rewritten.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_policies",
        sa.Column("app", sa.String(200), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("double_share", sa.Float(), nullable=False),
        sa.Column("judge_model", sa.String(200)),
        sa.Column("judge_metric", sa.String(200), nullable=False),
        sa.Column("judge_classifier", sa.Text()),
        sa.Column("judge_share", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("rubric", sa.Text()),
        sa.Column("hold_seconds", sa.Float(), nullable=False),
        sa.Column("bars", sa.JSON(), nullable=False),
    )
    op.create_table(
        "review_stage_moves",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("app", sa.String(200), nullable=False),
        sa.Column("from_stage", sa.String(16)),
        sa.Column("to_stage", sa.String(16), nullable=False),
        sa.Column("by", sa.String(200)),
        sa.Column("bars_met", sa.Boolean()),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("numbers", sa.JSON(), nullable=False),
    )
    op.create_index("ix_review_stage_moves_app", "review_stage_moves", ["app"])
    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("app", sa.String(200), nullable=False),
        sa.Column("trace_id", sa.String(64), sa.ForeignKey("traces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("copy", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("edited_text", sa.Text()),
        sa.Column("edit_distance", sa.Float()),
        sa.Column("reject_reason", sa.Text()),
        sa.Column("assignee", sa.String(200)),
        sa.Column("opened_by", sa.String(200)),
        sa.Column("opened_at", sa.DateTime(timezone=True)),
        sa.Column("skipped_by", sa.JSON(), nullable=False),
        sa.Column("reviewer", sa.String(200)),
        sa.Column("reviewed_at", sa.DateTime(timezone=True)),
        sa.Column("seconds", sa.Float()),
        sa.Column("judge_score", sa.Float()),
        sa.Column("judge_reason", sa.Text()),
        sa.Column("judge", sa.String(200)),
        sa.UniqueConstraint("trace_id", "copy", name="uq_review_items_trace_copy"),
    )
    for column in ("created_at", "app", "trace_id", "status", "assignee"):
        op.create_index(f"ix_review_items_{column}", "review_items", [column])


def downgrade() -> None:
    for table in ("review_items", "review_stage_moves", "review_policies"):
        op.drop_table(table)
