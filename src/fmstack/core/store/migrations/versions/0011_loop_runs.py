"""The closed loop (`fmstack loop run`): one row per loop run of an app, with the data window it read (so the next
run starts where it ended), the step it reached, what each finished step produced, and how it ended — so a killed
run can be resumed, or at least says where it stopped.

Revision ID: 0011
Revises: 0010

Only a table is added: no existing row is rewritten.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "loop_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("app", sa.String(200), nullable=False),
        sa.Column("base", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("since", sa.DateTime(timezone=True)),
        sa.Column("until", sa.DateTime(timezone=True)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("candidate", sa.String(200)),
        sa.Column("workdir", sa.Text(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("pid", sa.Integer()),
        sa.Column("host", sa.String(200)),
    )
    op.create_index("ix_loop_runs_app", "loop_runs", ["app"])


def downgrade() -> None:
    op.drop_index("ix_loop_runs_app", "loop_runs")
    op.drop_table("loop_runs")
