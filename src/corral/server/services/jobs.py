"""Jobs: submission, queries, termination, deletion.

Submission validates everything that can be known up front — the spec, the
cluster, whether the job could ever fit it, the code archive — so a job that
enters the queue can run. Secret values are kept apart from the spec and never
returned.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from corral.backends.base import NodeProvider
from corral.core.errors import Conflict
from corral.core.models import Attempt, Job, JobError, JobEvent
from corral.core.specs import PRIORITY_RANK, node_gpus
from corral.core.states import UPLOADING_OUTPUTS, ErrorCode, JobState
from corral.launch.planner import rank_nodes
from corral.server.access import Access
from corral.server.services import arrays, outputs
from corral.server.services.lookup import (
    experiment_row,
    job_row,
    stored_job_spec,
    stored_toolkit,
    workspace_row,
)
from corral.store.tables import AttemptRow, ClusterRow, ExperimentRow, JobEventRow, JobRow
from corral.store.transitions import transition_job

PRIORITY_NAME = {v: k for k, v in PRIORITY_RANK.items()}


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def to_model(row: JobRow, *, workspace: str, experiment: str, attempts: list[AttemptRow] | None = None) -> Job:
    error = JobError(code=row.error_code, message=row.error_message or "") if row.error_code else None
    attempt_models = [
        Attempt(
            number=a.number,
            nodes=list(a.node_names),
            started_at=_ts(a.started_at),
            ended_at=_ts(a.ended_at),
            exit_code=a.exit_code,
            reason=a.reason,
        )
        for a in attempts or []
    ]
    spec = stored_job_spec(row)
    return Job(
        name=row.name,
        uid=row.uid,
        workspace=workspace,
        experiment=experiment,
        cluster=row.cluster_name,
        state=JobState(row.state),
        priority=PRIORITY_NAME[row.priority],
        node_count=row.node_count,
        rank_count=row.rank_count,
        toolkit=stored_toolkit(row.spec),
        spec=spec,
        submitted_by=row.submitted_by,
        created_at=datetime.fromtimestamp(row.created_at, UTC),
        started_at=_ts(row.started_at),
        ended_at=_ts(row.ended_at),
        exit_code=row.exit_code,
        error=error,
        attempts=attempt_models,
        nodes=attempt_models[-1].nodes if attempt_models and row.state != JobState.QUEUED else [],
        job_dir=row.job_dir,
        reason=row.reason if row.state == JobState.QUEUED or _uploading(row) else None,
    )


def _uploading(row: JobRow) -> bool:
    return row.state == JobState.RUNNING and row.reason == UPLOADING_OUTPUTS


def list_jobs(
    session: Session,
    *,
    workspace: str,
    experiment: str | None,
    state: JobState | None = None,
    name: str | None = None,
    prefix: str | None = None,
    after: int | None = None,
    limit: int = 1000,
) -> tuple[list[Job], str | None]:
    """Jobs of one experiment, or of every experiment of the workspace (``experiment=None``), oldest first,
    each with its attempts (as ``show`` gives them); and the cursor of the next page (None on the last)."""
    ws = workspace_row(session, workspace)
    query = select(JobRow, ExperimentRow.name).join(ExperimentRow, ExperimentRow.id == JobRow.experiment_id)
    if experiment is not None:
        query = query.where(JobRow.experiment_id == experiment_row(session, ws, experiment).id)
    else:
        query = query.where(JobRow.workspace_id == ws.id)
    if state is not None:
        query = query.where(JobRow.state == state.value)
    if name is not None:
        query = query.where(JobRow.name == name)
    if prefix:
        query = query.where(JobRow.name.startswith(prefix, autoescape=True))
    if name is None and not prefix:  # an array is one row: its tasks are listed by name or prefix (NAME.)
        query = query.where(JobRow.array_id.is_(None))
    if after is not None:
        query = query.where(JobRow.id > after)
    rows = session.execute(query.order_by(JobRow.id).limit(limit + 1)).all()
    next_cursor = str(rows[limit - 1][0].id) if len(rows) > limit else None
    rows = rows[:limit]
    attempts: dict[int, list[AttemptRow]] = {}
    ids = [row.id for row, _ in rows]
    for start in range(0, len(ids), 1000):  # bounded IN lists
        chunk = ids[start : start + 1000]
        for attempt in session.scalars(
            select(AttemptRow).where(AttemptRow.job_id.in_(chunk)).order_by(AttemptRow.job_id, AttemptRow.number)
        ):
            attempts.setdefault(attempt.job_id, []).append(attempt)
    jobs = [
        to_model(row, workspace=workspace, experiment=exp_name, attempts=attempts.get(row.id, []))
        for row, exp_name in rows
    ]
    for job, (row, _) in zip(jobs, rows, strict=True):
        if row.array_count is not None:
            job.array = arrays.array_status(session, row)
    return jobs, next_cursor


def get_job(session: Session, *, workspace: str, experiment: str, name: str) -> Job:
    return load_job(session, workspace=workspace, experiment=experiment, name=name)[0]


def load_job(session: Session, *, workspace: str, experiment: str, name: str) -> tuple[Job, int]:
    """The job and its row id (for waiting on it)."""
    row, _ = job_row(session, workspace, experiment, name)
    attempts = list(session.scalars(select(AttemptRow).where(AttemptRow.job_id == row.id).order_by(AttemptRow.number)))
    job = to_model(row, workspace=workspace, experiment=experiment, attempts=attempts)
    if attempts:
        job.rank_nodes = rank_nodes_of(session, row, list(attempts[-1].node_names))
        if row.state == JobState.RUNNING:
            job.step = "uploading" if _uploading(row) else outputs.running_step(row, attempts[-1])
    if row.array_count is not None:
        job.array = arrays.array_status(session, row)
    return job, row.id


def rank_nodes_of(session: Session, row: JobRow, nodes: list[str]) -> list[str | None]:
    """The node each rank of the job runs on, given its attempt's nodes (None where it cannot be known)."""
    spec = stored_job_spec(row)
    if spec is None or len(nodes) != spec.node_count:
        return [None] * row.rank_count
    cluster = session.get(ClusterRow, row.cluster_id) if row.cluster_id is not None else None
    # The raw read: showing a job must work even where its cluster's stored spec no longer loads.
    return rank_nodes(spec, nodes, gpus_per_node=node_gpus(cluster.spec) if cluster is not None else 0)


def terminate_job(
    session: Session,
    *,
    workspace: str,
    experiment: str,
    name: str,
    access: Access,
    why: tuple[ErrorCode, str] | None = None,
) -> tuple[Job, int, str]:
    """Returns the job, its id and what the caller must do next: ``"signal"``, ``"ended"`` or ``"none"``.
    ``why``: the error code and message it ends with, when not the user's request (``Pruned`` by its sweep)."""
    row, _ = job_row(session, workspace, experiment, name)
    access.check_job_change(submitted_by=row.submitted_by, job=name)
    state = JobState(row.state)
    if state.is_terminal:
        raise Conflict(f"job {name!r} already {state.value}")
    now = time.time()
    action = "none"
    code, message = why or (ErrorCode.TERMINATED, "terminated before it started")
    if state == JobState.QUEUED:
        if transition_job(
            session,
            row,
            JobState.TERMINATED,
            reason=code,
            message=message,
            at=now,
            ended_at=now,
            error_code=code,
            error_message=message,
        ):
            action = "ended"
        state = JobState(row.state)  # the scheduler may have started it meanwhile
    if state == JobState.RUNNING and transition_job(
        session, row, JobState.TERMINATING, reason=code if why else "TerminateRequested",
        message=message if why else None, at=now, terminate_requested_at=now,
    ):  # fmt: skip
        action = "signal"
        if why:  # its own reason rides on the row to the attempt's end (``finish_runs``), across restarts too
            session.execute(update(JobRow).where(JobRow.id == row.id).values(reason=code, terminate_message=message))
    return get_job(session, workspace=workspace, experiment=experiment, name=name), row.id, action


def delete_job(
    session: Session, *, workspace: str, experiment: str, name: str, access: Access
) -> list[tuple[str, str]]:
    """Delete a finished job (an array with its tasks); returns (job dir, uid) of each for
    :func:`remove_job_files` after commit."""
    row, _ = job_row(session, workspace, experiment, name)
    access.check_job_change(submitted_by=row.submitted_by, job=name)
    if not JobState(row.state).is_terminal:
        raise Conflict(f"job {name!r} is {row.state}; terminate it before deleting it")
    found = [(row.job_dir, row.uid)]
    if row.array_count is not None:  # its tasks go with it (the foreign key's cascade): their files too
        found += [
            (d, u) for d, u in session.execute(select(JobRow.job_dir, JobRow.uid).where(JobRow.array_id == row.id))
        ]
    session.delete(row)
    return found


def list_events(session: Session, *, workspace: str, experiment: str, name: str) -> list[JobEvent]:
    row, _ = job_row(session, workspace, experiment, name)
    events = session.scalars(select(JobEventRow).where(JobEventRow.job_id == row.id).order_by(JobEventRow.id))
    return [
        JobEvent(
            at=datetime.fromtimestamp(e.at, UTC),
            from_state=e.from_state,
            to_state=e.to_state,
            reason=e.reason,
            message=e.message,
        )
        for e in events
    ]


def remove_job_files(nodes: NodeProvider, jobs: list[tuple[str, str]]) -> None:
    """Remove deleted jobs' files: the job dir, and what every node kept of the job (its temp dirs)."""
    for job_dir, uid in jobs:
        shutil.rmtree(job_dir, ignore_errors=True)
        nodes.remove_job_files(uid)
