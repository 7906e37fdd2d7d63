"""metrics: series per job, attempt, rank and name, and their points; which attempts' metric files were read

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Attempts that ended before metrics existed have nothing to read.
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("metrics_read", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.create_index("ix_attempts_metrics_read", ["metrics_read"])
    op.create_table(
        "metric_series",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("last_value", sa.Float(), nullable=False),
        sa.Column("min_value", sa.Float(), nullable=False),
        sa.Column("max_value", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("job_id", "attempt", "rank", "name"),
    )
    op.create_table(
        "metric_points",
        sa.Column("series_id", sa.Integer(), sa.ForeignKey("metric_series.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("step", sa.BigInteger(), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("metric_points")
    op.drop_table("metric_series")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_index("ix_attempts_metrics_read")
        batch.drop_column("metrics_read")
