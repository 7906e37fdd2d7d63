"""Experiments: named groups of jobs. Created explicitly or by the first job that names one."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from corral.core.errors import AlreadyExists, Conflict
from corral.core.models import Experiment
from corral.server.services.lookup import experiment_row, unfinished_jobs, workspace_row
from corral.store.tables import ExperimentRow, JobRow


def to_model(session: Session, row: ExperimentRow, workspace: str) -> Experiment:
    counts = dict(
        session.execute(
            select(JobRow.state, func.count()).where(JobRow.experiment_id == row.id).group_by(JobRow.state)
        ).all()
    )
    return Experiment(
        name=row.name,
        workspace=workspace,
        created_at=datetime.fromtimestamp(row.created_at, UTC),
        job_counts={str(k): int(v) for k, v in counts.items()},
    )


def get_or_create(session: Session, workspace_id: int, name: str) -> ExperimentRow:
    row = session.scalars(
        select(ExperimentRow).where(ExperimentRow.workspace_id == workspace_id, ExperimentRow.name == name)
    ).first()
    if row is None:
        row = ExperimentRow(workspace_id=workspace_id, name=name, created_at=time.time())
        session.add(row)
        session.flush()
    return row


def create_experiment(session: Session, *, workspace: str, name: str) -> Experiment:
    ws = workspace_row(session, workspace)
    if session.scalars(
        select(ExperimentRow).where(ExperimentRow.workspace_id == ws.id, ExperimentRow.name == name)
    ).first():
        raise AlreadyExists(f"experiment {name!r} already exists in workspace {workspace!r}")
    return to_model(session, get_or_create(session, ws.id, name), workspace)


def list_experiments(session: Session, *, workspace: str) -> list[Experiment]:
    ws = workspace_row(session, workspace)
    rows = session.scalars(
        select(ExperimentRow).where(ExperimentRow.workspace_id == ws.id).order_by(ExperimentRow.name)
    )
    return [to_model(session, r, workspace) for r in rows]


def get_experiment(session: Session, *, workspace: str, name: str) -> Experiment:
    ws = workspace_row(session, workspace)
    return to_model(session, experiment_row(session, ws, name), workspace)


def delete_experiment(session: Session, *, workspace: str, name: str) -> list[tuple[str, str]]:
    """Delete the experiment and its (finished) jobs; returns their (job dir, uid) to remove."""
    ws = workspace_row(session, workspace)
    row = experiment_row(session, ws, name)
    active = unfinished_jobs(session, experiment_id=row.id)
    if active:
        raise Conflict(f"experiment {name!r} has {active} queued or running jobs; terminate them first")
    jobs = [
        (d, u) for d, u in session.execute(select(JobRow.job_dir, JobRow.uid).where(JobRow.experiment_id == row.id))
    ]
    session.delete(row)
    return jobs
