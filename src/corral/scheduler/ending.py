"""How ended attempts are committed: their outcome on the attempt and the job, their nodes freed (or marked
unusable when their processes vanished), in the control loop's transaction. Also the two ways a job fails
without running: a stored spec that no longer loads, at placement or at recovery."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from corral.backends.base import ExitKind
from corral.core.states import UPLOADING_OUTPUTS, AttemptReason, ErrorCode, JobState, NodeState
from corral.scheduler.outcome import Run, attempt_outcome
from corral.store.tables import AttemptRow, JobEventRow, JobRow, NodeRow, table
from corral.store.transitions import JobKey, Movable, Move, release_nodes, transition_jobs, transition_nodes_each

log = logging.getLogger(__name__)

_JOBS, _ATTEMPTS = table(JobRow), table(AttemptRow)
#: Built once (the pass's hot path): what ending a job needs of it, and an attempt's end.
_ENDED_JOBS = select(_JOBS.c.id, _JOBS.c.name, _JOBS.c.state, _JOBS.c.reason, _JOBS.c.terminate_message).where(
    _JOBS.c.id.in_(bindparam("ids", expanding=True))
)
_END_ATTEMPTS = (
    update(_ATTEMPTS)
    .where(_ATTEMPTS.c.id == bindparam("_id"))
    .values(ended_at=bindparam("_ended_at"), exit_code=bindparam("_exit_code"), reason=bindparam("_reason"))
)


def finish_runs(session: Session, runs: list[Run], now: float, *, nodes_leaving: bool) -> list[Run]:
    """Commit how the runs ended; the runs whose jobs went back to the queue. With ``nodes_leaving``, the ended
    jobs' leaving nodes are let go too (they are removed at the next reconcile)."""
    job_ids = [r.job_id for r in runs]
    # No spec to decode: only the state moves (and a terminate request's own reason, ``Pruned``, comes along).
    jobs = {j.id: j for j in session.execute(_ENDED_JOBS, {"ids": job_ids})}
    lost = {
        run.plan.nodes[process.node_rank].node_id: run
        for run in runs
        for process in run.plan.processes
        if run.exits.get(process.rank) is not None and run.exits[process.rank].kind == ExitKind.LOST
    }
    if lost:  # its processes vanished without an exit code: not to be trusted until recovered
        rows = [
            {
                "id": node_id,
                "job_id": None,
                "error": f"lost during attempt {run.plan.attempt} of job {run.job_id}: its processes vanished "
                "without an exit code (corral cluster node recover returns it)",
            }
            for node_id, run in lost.items()
        ]
        transition_nodes_each(session, NodeState.UNUSABLE, rows, only_from=[NodeState.RUNNING])
    release_nodes(session, job_ids, now)  # a leaving node stays leaving: it goes once free
    if nodes_leaving:  # a leaving node whose job ended goes now
        session.execute(update(NodeRow).where(NodeRow.job_id.in_(job_ids)).values(job_id=None))
    moves, attempts = [], []
    for run in runs:
        job = jobs.get(run.job_id)
        if job is None:
            continue
        key = JobKey(job.id, job.name, job.state)
        if job.state == JobState.TERMINATING:
            # Terminated by a request this pass has not drained yet: that is how it ended.
            run.terminating = True
        outcome = attempt_outcome(run)
        if outcome.state == JobState.TERMINATED and job.reason == ErrorCode.PRUNED:
            outcome = replace(outcome, error_code=ErrorCode.PRUNED, error_message=job.terminate_message,
                              reason=AttemptReason.PRUNED)  # fmt: skip
        attempts.append(
            {"_id": run.attempt_id, "_ended_at": now, "_exit_code": outcome.exit_code, "_reason": outcome.reason}
        )
        if outcome.state == JobState.QUEUED:
            why = f"requeued: {run.failure.message}" if run.failure is not None else "requeued"
            moves.append(Move(key, JobState.QUEUED, outcome.reason, why, {"queued_at": now}))
            continue
        changes = {
            "ended_at": now,
            "exit_code": outcome.exit_code,
            "error_code": outcome.error_code,
            "error_message": outcome.error_message,
        }
        why = outcome.error_code or AttemptReason.EXITED
        moves.append(Move(key, outcome.state, why, outcome.error_message, changes))
    if attempts:
        session.connection().execute(_END_ATTEMPTS, attempts)
    requeued = {m.job.id for m in transition_jobs(session, moves, at=now) if m.target == JobState.QUEUED}
    return [r for r in runs if r.job_id in requeued and r.shape is not None]


def fail_unlaunchable(session: Session, broken: Mapping[int, tuple[Movable, str]], now: float) -> list[int]:
    """Fail the queued jobs whose stored spec (or their cluster's) no longer loads, each with its reason (one such
    job must not stop the pass, and with it every other job, again and again); the ids of those failed."""
    moves = []
    for job, message in broken.values():
        log.error("job %s (id %s) cannot be launched: %s", job.name, job.id, message)
        changes = {"ended_at": now, "error_code": ErrorCode.INVALID_SPEC, "error_message": message}
        moves.append(Move(job, JobState.FAILED, ErrorCode.INVALID_SPEC, message, changes))
    return [m.job.id for m in transition_jobs(session, moves, at=now)]


def fail_unrecoverable(session: Session, job: JobRow, attempt: AttemptRow, message: str, now: float) -> None:
    """A running job found at restart whose plan cannot be rebuilt: it ends failed, its nodes are freed."""
    log.error("job %s (id %s) cannot be recovered: %s", job.name, job.id, message)
    attempt.ended_at, attempt.reason = now, AttemptReason.INVALID_SPEC
    release_nodes(session, [job.id], now)
    target = JobState.TERMINATED if job.state == JobState.TERMINATING else JobState.FAILED
    changes = {"ended_at": now, "error_code": ErrorCode.INVALID_SPEC, "error_message": message}
    transition_jobs(session, [Move(job, target, ErrorCode.INVALID_SPEC, message, changes)], at=now)


def mark_uploading(session: Session, runs: list[Run], now: float) -> None:
    """The runs whose processes have all exited 0 and whose outputs now go to their volumes: their jobs say so
    (``reason``, an event), still running."""
    for run in runs:
        session.execute(update(JobRow).where(JobRow.id == run.job_id).values(reason=UPLOADING_OUTPUTS))
        message = "every process exited 0: uploading the outputs to their volumes"
        row = JobEventRow(job_id=run.job_id, at=now, from_state=JobState.RUNNING, to_state=JobState.RUNNING,
                          reason=UPLOADING_OUTPUTS, message=message)  # fmt: skip
        session.add(row)
