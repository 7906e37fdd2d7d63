"""the array driver's look for live arrays: a partial index of the jobs that are arrays

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ARRAYS = sa.text("array_count IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_jobs_live_arrays", "jobs", ["state"], sqlite_where=ARRAYS, postgresql_where=ARRAYS)


def downgrade() -> None:
    op.drop_index("ix_jobs_live_arrays", table_name="jobs")
