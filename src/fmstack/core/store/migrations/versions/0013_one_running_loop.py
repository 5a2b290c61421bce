"""One running loop per app: a partial unique index on loop_runs(app) where the status is running, so two
`fmstack loop run` started at once cannot both insert a running row (the check before the insert could not stop
that).

Revision ID: 0013
Revises: 0012

Older stores may hold several running rows of one app (runs killed before they could say so): all but the latest
become interrupted first, as `fmstack loop run` itself would mark them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    op.execute(
        "UPDATE loop_runs SET status = 'interrupted', reason = 'the process running it ended' "
        "WHERE status = 'running' AND id NOT IN (SELECT MAX(id) FROM loop_runs WHERE status = 'running' GROUP BY app)"
    )
    op.create_index(
        "ux_loop_runs_running", "loop_runs", ["app"], unique=True, sqlite_where=RUNNING, postgresql_where=RUNNING
    )


def downgrade() -> None:
    op.drop_index("ux_loop_runs_running", "loop_runs")
