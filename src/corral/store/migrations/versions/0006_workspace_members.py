"""workspace members with roles; token expiry; the Unix account a user's jobs run as

Users that existed before roles could submit anywhere: each becomes a contributor of every workspace, so an
upgrade takes nothing away that they used (an owner or admin narrows it afterwards).

Revision ID: 0006
Revises: 0005
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("principals", sa.Column("token_expires_at", sa.Float(), nullable=True))
    op.add_column("principals", sa.Column("unix_user", sa.String(length=32), nullable=True))
    op.add_column("jobs", sa.Column("run_as", sa.String(length=32), nullable=True))
    op.add_column("clusters", sa.Column("run_as", sa.String(length=32), nullable=True))
    members = op.create_table(
        "workspace_members",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("workspace_id", sa.Integer(), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("principal_id", sa.Integer(), sa.ForeignKey("principals.id", ondelete="CASCADE"), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("workspace_id", "principal_id"),
    )
    op.create_index("ix_workspace_members_principal_id", "workspace_members", ["principal_id"])
    bind = op.get_bind()
    users = bind.execute(sa.text("SELECT id FROM principals WHERE NOT is_admin")).scalars().all()
    spaces = bind.execute(sa.text("SELECT id FROM workspaces")).scalars().all()
    now = time.time()
    rows = [
        {"workspace_id": w, "principal_id": u, "role": "contributor", "created_at": now} for u in users for w in spaces
    ]
    if rows:
        op.bulk_insert(members, rows)


def downgrade() -> None:
    op.drop_index("ix_workspace_members_principal_id", table_name="workspace_members")
    op.drop_table("workspace_members")
    op.drop_column("clusters", "run_as")
    op.drop_column("jobs", "run_as")
    op.drop_column("principals", "unix_user")
    op.drop_column("principals", "token_expires_at")
