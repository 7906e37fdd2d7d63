"""Find rows by the names users use, or raise NotFound naming what is missing."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.errors import NotFound
from corral.store.tables import ClusterRow, ExperimentRow, JobRow, WorkspaceRow


def workspace_row(session: Session, name: str) -> WorkspaceRow:
    row = session.scalars(select(WorkspaceRow).where(WorkspaceRow.name == name)).first()
    if row is None:
        raise NotFound(f"workspace {name!r} not found")
    return row


def cluster_row(session: Session, workspace: WorkspaceRow, name: str) -> ClusterRow:
    row = session.scalars(
        select(ClusterRow).where(ClusterRow.workspace_id == workspace.id, ClusterRow.name == name)
    ).first()
    if row is None:
        raise NotFound(f"cluster {name!r} not found in workspace {workspace.name!r}")
    return row


def experiment_row(session: Session, workspace: WorkspaceRow, name: str) -> ExperimentRow:
    row = session.scalars(
        select(ExperimentRow).where(ExperimentRow.workspace_id == workspace.id, ExperimentRow.name == name)
    ).first()
    if row is None:
        raise NotFound(f"experiment {name!r} not found in workspace {workspace.name!r}")
    return row


def job_row(session: Session, workspace: str, experiment: str, name: str) -> tuple[JobRow, ExperimentRow]:
    ws = workspace_row(session, workspace)
    exp = experiment_row(session, ws, experiment)
    row = session.scalars(select(JobRow).where(JobRow.experiment_id == exp.id, JobRow.name == name)).first()
    if row is None:
        raise NotFound(f"job {name!r} not found in experiment {experiment!r}")
    return row, exp
