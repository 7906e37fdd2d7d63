"""node lifecycle: the error of an unusable node, since when a node is idle

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("error", sa.String(length=512), nullable=True))
        batch.add_column(sa.Column("idle_since", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("idle_since")
        batch.drop_column("error")
