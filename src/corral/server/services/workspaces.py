"""Workspaces: the tenancy boundary. ``default`` always exists."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.errors import AlreadyExists
from corral.core.models import Quota, Workspace
from corral.server.services.lookup import workspace_row
from corral.store.tables import ExperimentRow, WorkspaceRow

DEFAULT = "default"


def to_model(row: WorkspaceRow) -> Workspace:
    return Workspace(
        name=row.name,
        created_at=datetime.fromtimestamp(row.created_at, UTC),
        quota=Quota(max_nodes=row.max_nodes, max_gpus=row.max_gpus),
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


def create_workspace(session: Session, *, name: str) -> Workspace:
    if session.scalars(select(WorkspaceRow).where(WorkspaceRow.name == name)).first() is not None:
        raise AlreadyExists(f"workspace {name!r} already exists")
    return to_model(create_workspace_row(session, name=name))


def list_workspaces(session: Session) -> list[Workspace]:
    return [to_model(r) for r in session.scalars(select(WorkspaceRow).order_by(WorkspaceRow.name))]


def get_workspace(session: Session, *, name: str) -> Workspace:
    return to_model(workspace_row(session, name))


def set_quota(session: Session, *, name: str, quota: Quota) -> Workspace:
    row = workspace_row(session, name)
    row.max_nodes, row.max_gpus = quota.max_nodes, quota.max_gpus
    session.flush()
    return to_model(row)
