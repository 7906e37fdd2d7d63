"""queue policy: wait reasons, queue times, wall clocks of jobs; workspace quotas

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("queued_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("reason", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("wall_clock", sa.Float(), nullable=True))
    op.execute("UPDATE jobs SET queued_at = created_at")
    with op.batch_alter_table("workspaces") as batch:
        batch.add_column(sa.Column("max_nodes", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_gpus", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workspaces") as batch:
        batch.drop_column("max_gpus")
        batch.drop_column("max_nodes")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("wall_clock")
        batch.drop_column("reason")
        batch.drop_column("queued_at")
