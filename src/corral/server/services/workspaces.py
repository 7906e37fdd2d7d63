"""Workspaces: the tenancy boundary, with their members' roles. ``default`` always exists."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.errors import AlreadyExists, NotFound
from corral.core.models import Member, Quota, Role, Workspace
from corral.server.services.lookup import workspace_row
from corral.server.services.users import user_row
from corral.store.tables import ExperimentRow, MemberRow, PrincipalRow, WorkspaceRow

DEFAULT = "default"


def to_model(row: WorkspaceRow, role: str | None = None) -> Workspace:
    return Workspace(
        name=row.name,
        created_at=datetime.fromtimestamp(row.created_at, UTC),
        quota=Quota(max_nodes=row.max_nodes, max_gpus=row.max_gpus),
        role=role,
    )


def ensure_defaults(session: Session) -> None:
    """The ``default`` workspace with its ``default`` experiment."""
    if session.scalars(select(WorkspaceRow).where(WorkspaceRow.name == DEFAULT)).first() is None:
        create_workspace_row(session, name=DEFAULT)


def create_workspace_row(session: Session, *, name: str) -> WorkspaceRow:
    now = time.time()
    row = WorkspaceRow(name=name, created_at=now)
    session.add(row)
    session.flush()
    session.add(ExperimentRow(workspace_id=row.id, name=DEFAULT, created_at=now))
    return row


def create_workspace(session: Session, *, name: str, owner: str | None) -> Workspace:
    """A new workspace with its ``default`` experiment; ``owner``, when given, becomes its owner."""
    if session.scalars(select(WorkspaceRow).where(WorkspaceRow.name == name)).first() is not None:
        raise AlreadyExists(f"workspace {name!r} already exists")
    owner_row = user_row(session, owner) if owner is not None else None
    row = create_workspace_row(session, name=name)
    if owner_row is not None:
        session.add(MemberRow(workspace_id=row.id, principal_id=owner_row.id, role="owner", created_at=time.time()))
    return to_model(row, "owner" if owner_row is not None else None)


def list_workspaces(session: Session, *, roles: dict[str, Role] | None) -> list[Workspace]:
    """Every workspace (``roles`` None: an admin's view), or those where the caller holds a role."""
    query = select(WorkspaceRow).order_by(WorkspaceRow.name)
    if roles is None:
        return [to_model(r, "admin") for r in session.scalars(query)]
    return [to_model(r, roles[r.name]) for r in session.scalars(query.where(WorkspaceRow.name.in_(roles)))]


def get_workspace(session: Session, *, name: str, role: str | None) -> Workspace:
    return to_model(workspace_row(session, name), role)


def list_members(session: Session, *, workspace: str) -> list[Member]:
    query = (
        select(PrincipalRow.name, MemberRow.role, MemberRow.created_at)
        .join(MemberRow, MemberRow.principal_id == PrincipalRow.id)
        .where(MemberRow.workspace_id == workspace_row(session, workspace).id)
        .order_by(PrincipalRow.name)
    )
    rows = session.execute(query)
    return [Member(user=user, role=role, added_at=datetime.fromtimestamp(at, UTC)) for user, role, at in rows]


def set_member(session: Session, *, workspace: str, user: str, role: Role) -> Member:
    """Give ``user`` the role in the workspace (a member's role is replaced)."""
    ws = workspace_row(session, workspace)
    principal = user_row(session, user)
    row = session.scalars(
        select(MemberRow).where(MemberRow.workspace_id == ws.id, MemberRow.principal_id == principal.id)
    ).first()
    if row is None:
        row = MemberRow(workspace_id=ws.id, principal_id=principal.id, role=role, created_at=time.time())
        session.add(row)
    row.role = role
    session.flush()
    return Member(user=user, role=role, added_at=datetime.fromtimestamp(row.created_at, UTC))


def remove_member(session: Session, *, workspace: str, user: str) -> None:
    ws = workspace_row(session, workspace)
    row = session.scalars(
        select(MemberRow)
        .join(PrincipalRow, PrincipalRow.id == MemberRow.principal_id)
        .where(MemberRow.workspace_id == ws.id, PrincipalRow.name == user)
    ).first()
    if row is None:
        raise NotFound(f"user {user!r} is not a member of workspace {workspace!r}")
    session.delete(row)


def set_quota(session: Session, *, name: str, quota: Quota) -> Workspace:
    row = workspace_row(session, name)
    row.max_nodes, row.max_gpus = quota.max_nodes, quota.max_gpus
    session.flush()
    return to_model(row)
