"""The one function through which a job's state changes.

``transition_job`` checks the move against ``core.states.JOB_TRANSITIONS``,
applies it as a compare-and-set (``WHERE state = <current>``) so two writers
can never both move the same job, and appends the event row in the same
transaction. Callers pass any columns that change with the state.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from corral.core.errors import Conflict
from corral.core.states import JobState, can_transition
from corral.store.tables import JobEventRow, JobRow


def transition_job(
    session: Session,
    job: JobRow,
    target: JobState,
    *,
    reason: str | None = None,
    message: str | None = None,
    at: float | None = None,
    **changes: Any,
) -> bool:
    """Move ``job`` to ``target``; False if another writer moved it first.

    Raises Conflict when the move is not allowed from the job's current state.
    """
    current = JobState(job.state)
    if not can_transition(current, target):
        raise Conflict(f"job {job.name!r} is {current.value}; it cannot become {target.value}")
    now = time.time() if at is None else at
    result = session.execute(
        update(JobRow)
        .where(JobRow.id == job.id, JobRow.state == current.value)
        .values(state=target.value, **changes)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(job)
        return False
    job.state = target.value
    for key, value in changes.items():
        setattr(job, key, value)
    session.add(
        JobEventRow(
            job_id=job.id,
            at=now,
            from_state=current.value,
            to_state=target.value,
            reason=reason,
            message=message,
        )
    )
    return True


def record_created(session: Session, job: JobRow) -> None:
    """The first event of a job's history."""
    session.add(JobEventRow(job_id=job.id, at=job.created_at, from_state=None, to_state=job.state))
