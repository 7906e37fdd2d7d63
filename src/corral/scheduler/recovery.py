"""After a restart: the runs of jobs that were running when the last server stopped, rebuilt from the database
(the same plans as before), and the users' fair-share usage. The control loop then asks the backend what became
of each run's processes while no server was watching."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.backends.base import NodeProvider
from corral.core.states import REQUEUE_REASONS, AttemptReason, JobState, NodeState
from corral.scheduler.ending import fail_unrecoverable
from corral.scheduler.outcome import Run
from corral.scheduler.ports import PortAllocator
from corral.scheduler.runs import load_for_launch, new_run
from corral.scheduler.usage import Usage
from corral.store.tables import AttemptRow, JobRow, NodeRow
from corral.store.transitions import transition_node


def rebuild_usage(session: Session, usage: Usage, now: float) -> None:
    """Each user's past usage, from the attempts that ended within the span that still counts."""
    ended = session.execute(
        select(JobRow.submitted_by, AttemptRow.started_at, AttemptRow.ended_at, AttemptRow.node_ids)
        .join(JobRow, JobRow.id == AttemptRow.job_id)
        .where(AttemptRow.ended_at > now - 8 * usage.half_life)
        .order_by(AttemptRow.ended_at)
    )
    for user, started_at, ended_at, node_ids in ended:
        usage.add(user, len(node_ids) * max(0.0, ended_at - started_at), ended_at)


@dataclass(frozen=True)
class Unplanned:
    """The attempt of a job whose plan could not be rebuilt, failed here: its processes are to be ended."""

    job_uid: str
    attempt: int
    ips: tuple[str, ...]


def rebuild_runs(
    session: Session, now: float, *, provider: NodeProvider, ports: PortAllocator
) -> tuple[list[Run], list[Unplanned]]:
    """The runs of the running and terminating jobs, their ports reserved again; a run that was being stopped
    (preempted, removed node, terminate request) has its kill time set. A job whose plan cannot be rebuilt ends
    failed (and is returned, so that its processes are ended). Nodes marked busy for a job that no longer runs
    are freed."""
    runs: list[Run] = []
    unplanned: list[Unplanned] = []
    busy: set[int] = set()
    running = JobRow.state.in_([JobState.RUNNING, JobState.TERMINATING]) & JobRow.array_count.is_(None)  # not arrays
    for job in session.scalars(select(JobRow).where(running)).all():
        attempt = session.scalars(
            select(AttemptRow).where(AttemptRow.job_id == job.id, AttemptRow.number == job.attempt_count)
        ).one()
        nodes_by_id = {n.id: n for n in session.scalars(select(NodeRow).where(NodeRow.id.in_(attempt.node_ids)))}
        nodes = [nodes_by_id[i] for i in attempt.node_ids if i in nodes_by_id]
        busy.update(n.id for n in nodes)
        loaded, broken = load_for_launch(session, [job.id])
        if job.id in broken:  # it cannot be followed without its plan: say so rather than hang
            fail_unrecoverable(session, job, attempt, broken[job.id][1], now)
            unplanned.append(Unplanned(job.uid, attempt.number, tuple(n.ip for n in nodes)))
            continue
        block = tuple(attempt.ports or ())
        ports.reserve(block)
        run = new_run(loaded[job.id], attempt.id, nodes, block, started_at=attempt.started_at, provider=provider)
        if attempt.reason in REQUEUE_REASONS:  # being preempted when the last server stopped
            run.preempted, run.requeue_reason = True, AttemptReason(attempt.reason)
            run.kill_at = now + run.plan.grace_seconds
        if job.state == JobState.TERMINATING:
            run.terminating = True
            run.kill_at = (job.terminate_requested_at or now) + run.plan.grace_seconds
        runs.append(run)
    # Repair: a node marked running for a job that is not running any more.
    for node in session.scalars(select(NodeRow).where(NodeRow.state.in_([NodeState.RUNNING, NodeState.LEAVING]))):
        if node.id not in busy:
            if node.state == NodeState.RUNNING:
                transition_node(node, NodeState.IDLE, idle_since=now)
            node.job_id = None
    return runs, unplanned
