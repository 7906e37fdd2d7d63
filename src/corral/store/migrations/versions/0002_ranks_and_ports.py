"""ranks per job, ports per attempt (distributed toolkits)

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("rank_count", sa.Integer(), nullable=True))
    op.execute("UPDATE jobs SET rank_count = node_count")  # every job before this had one process per node
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("rank_count", nullable=False)
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("ports", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("ports")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("rank_count")
