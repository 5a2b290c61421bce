"""The context every traced call carries: the route and variant that served it (A/B), the API key's name (never the
key), the eval run that asked for it, and what inference optimisation saved (prompt tokens reused from the prefix
cache, speculative draft tokens proposed and accepted).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

STRINGS = ("route", "variant", "key_name", "eval_run_id")
COUNTS = ("cached_tokens", "draft_tokens", "accepted_tokens")


def upgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        for name in STRINGS:
            batch.add_column(sa.Column(name, sa.String(200), nullable=True))
        for name in COUNTS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
        batch.create_index("ix_traces_route", ["route"])
        batch.create_index("ix_traces_eval_run_id", ["eval_run_id"])


def downgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.drop_index("ix_traces_eval_run_id")
        batch.drop_index("ix_traces_route")
        for name in STRINGS + COUNTS:
            batch.drop_column(name)
