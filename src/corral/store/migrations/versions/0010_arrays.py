"""arrays: a job array's number of tasks; a task's array and index

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("array_count", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("array_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("array_index", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_jobs_array_id", "jobs", ["array_id"], ["id"], ondelete="CASCADE")
        batch.create_index("ix_jobs_array", ["array_id", "array_index"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_array")
        batch.drop_constraint("fk_jobs_array_id", type_="foreignkey")
        batch.drop_column("array_index")
        batch.drop_column("array_id")
        batch.drop_column("array_count")
