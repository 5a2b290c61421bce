"""A prompt route's promotion moves its alias too: each A/B change records the alias move it made, so that a
rollback can move the alias back.

Revision ID: 0012
Revises: 0011

Only a nullable column is added: no existing row is rewritten.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ab_changes") as batch:
        batch.add_column(sa.Column("alias_move", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("ab_changes") as batch:
        batch.drop_column("alias_move")
