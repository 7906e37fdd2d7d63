"""The one place where jobs' and nodes' states change: :func:`transition_jobs`, and for nodes
:func:`transition_node` / :func:`transition_nodes_each` / :func:`release_nodes`.

It checks each move against ``core.states.JOB_TRANSITIONS``, applies the moves as
compare-and-set updates (``WHERE id = :id AND state = :from``) so two writers
can never both move the same job, and appends one event row per move in the
same transaction. Moves are applied in batches (one ``executemany`` per kind of
move), because the control loop moves many jobs per pass and every statement it
runs is a round trip on its hot path. :func:`transition_job` is the one-job form.

Nodes move by ``core.states.NODE_TRANSITIONS`` the same way: compare-and-set on the states the table lets reach
the target (or fewer, when a caller names them), in one statement for many nodes; their history is not kept.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Update, bindparam, insert, literal_column, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from corral.core.errors import Conflict
from corral.core.states import NODE_TRANSITIONS, JobState, NodeState, can_transition, node_sources
from corral.store.tables import JobEventRow, JobRow, NodeRow, table


class Movable(Protocol):
    """A job as a move needs it: its ORM row, or a plain one (:class:`JobKey`, the control loop's rows)."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...


@dataclass
class JobKey:
    """What moving a job needs of it, where its ORM row was not loaded (the control loop's hot path)."""

    id: int
    name: str
    state: str


@dataclass
class Move:
    job: Movable
    target: JobState
    reason: str | None = None
    message: str | None = None
    #: Other columns that change with the state.
    changes: dict[str, Any] = field(default_factory=dict)


# The control loop's statements are Core, built once: building one costs more than running it.
_JOBS, _NODES = table(JobRow), table(NodeRow)
_INSERT_EVENTS = insert(table(JobEventRow))
#: The nodes of ended jobs freed (running -> idle, a move NODE_TRANSITIONS allows).
_RELEASE = (
    update(_NODES)
    .where(_NODES.c.job_id.in_(bindparam("job_ids", expanding=True)), _NODES.c.state == NodeState.RUNNING.value)
    .values(state=NodeState.IDLE.value, job_id=None, idle_since=bindparam("now"))
)


@functools.cache
def _move_statement(from_state: str, target: str, columns: tuple[str, ...]) -> Update:
    """The compare-and-set update of one kind of move (built once per kind)."""
    return (
        update(_JOBS)
        .where(_JOBS.c.id == bindparam("_id"), _JOBS.c.state == from_state)
        .values(state=target, **{c: bindparam(f"_{c}") for c in columns})
    )


@functools.cache
def _node_move_statement(target: str, sources: tuple[str, ...], columns: tuple[str, ...]) -> Update:
    """The batched update of one kind of node move (built once per kind). The states are literals: an executemany
    takes no list parameter (they are the enum's own names)."""
    return (
        update(_NODES)
        .where(_NODES.c.id == bindparam("_id"), _NODES.c.state.in_([literal_column(f"'{v}'") for v in sources]))
        .values(state=target, **{c: bindparam(f"_{c}") for c in columns})
    )


def _set(job: Movable, column: str, value: Any) -> None:
    """The loaded job says what the database now holds (without marking an ORM row changed)."""
    if isinstance(job, JobRow):
        set_committed_value(job, column, value)
    else:
        setattr(job, column, value)


def transition_jobs(session: Session, moves: list[Move], *, at: float | None = None) -> list[Move]:
    """Apply ``moves``; returns those that took effect (another writer may have moved a job first).

    Raises Conflict when a move is not allowed from the job's current state.
    """
    now = time.time() if at is None else at
    session.flush()  # pending ORM changes go first, in order
    groups: dict[tuple[str, str, tuple[str, ...]], list[Move]] = defaultdict(list)
    for move in moves:
        current = JobState(move.job.state)
        if not can_transition(current, move.target):
            raise Conflict(f"job {move.job.name!r} is {current.value}; it cannot become {move.target.value}")
        groups[(current.value, move.target.value, tuple(sorted(move.changes)))].append(move)
    done: list[Move] = []
    connection = session.connection()
    for (from_state, target, columns), group in groups.items():
        params = [{"_id": m.job.id, **{f"_{c}": m.changes[c] for c in columns}} for m in group]
        result = connection.execute(_move_statement(from_state, target, columns), params)
        moved = group
        if result.rowcount != len(group):
            states = dict(
                session.execute(select(JobRow.id, JobRow.state).where(JobRow.id.in_([m.job.id for m in group]))).all()
            )
            moved = [m for m in group if states.get(m.job.id) == target]
            for move in group:
                if states.get(move.job.id, target) != target:  # moved by another writer: show what it did
                    _set(move.job, "state", states[move.job.id])
        for move in moved:
            _set(move.job, "state", target)
            for column, value in move.changes.items():
                _set(move.job, column, value)
        done.extend(moved)
        if moved:
            events = [
                {"job_id": m.job.id, "at": now, "from_state": from_state, "to_state": target, "reason": m.reason,
                 "message": m.message}
                for m in moved
            ]  # fmt: skip
            connection.execute(_INSERT_EVENTS, events)
    return done


def transition_job(
    session: Session,
    job: Movable,
    target: JobState,
    *,
    reason: str | None = None,
    message: str | None = None,
    at: float | None = None,
    **changes: Any,
) -> bool:
    """Move one job; False if another writer moved it first."""
    return bool(transition_jobs(session, [Move(job, target, reason, message, changes)], at=at))


def record_created(session: Session, created: list[tuple[int, float]]) -> None:
    """The first event of each job's history (job id, when): it was queued."""
    queued = JobState.QUEUED.value
    rows = [{"job_id": job_id, "at": at, "from_state": None, "to_state": queued} for job_id, at in created]
    session.connection().execute(_INSERT_EVENTS, rows)


def _sources(target: NodeState, only: Collection[NodeState] | None) -> list[str]:
    allowed = node_sources(target)
    if only is not None and not set(only) <= allowed:
        raise ValueError(f"nodes cannot become {target.value} from {sorted(set(only) - allowed)}")
    return sorted(s.value for s in (allowed if only is None else only))


def transition_node(node: NodeRow, target: NodeState, **changes: Any) -> None:
    """Move a node loaded in the session (the change is flushed with it); Conflict when the table forbids it."""
    current = NodeState(node.state)
    if target not in NODE_TRANSITIONS[current]:
        raise Conflict(f"node {node.name!r} is {current.value}; it cannot become {target.value}")
    node.state = target
    for column, value in changes.items():
        setattr(node, column, value)


def release_nodes(session: Session, job_ids: list[int], now: float) -> int:
    """The running nodes of these jobs, which ended, become idle (a leaving node stays leaving); how many moved."""
    session.flush()
    return int(session.connection().execute(_RELEASE, {"job_ids": job_ids, "now": now}).rowcount)


def transition_nodes_each(
    session: Session,
    target: NodeState,
    rows: list[dict[str, Any]],
    *,
    only_from: Collection[NodeState] | None = None,
) -> int:
    """Move each node of ``rows`` (``{"id": ..., <column>: <value>, ...}``, the same columns in every row) in one
    batch; how many moved (fewer when some were not in a state that may reach ``target``)."""
    if not rows:
        return 0
    columns = tuple(sorted(set(rows[0]) - {"id"}))
    statement = _node_move_statement(target.value, tuple(_sources(target, only_from)), columns)
    params = [{"_id": row["id"], **{f"_{c}": row[c] for c in columns}} for row in rows]
    session.flush()
    return int(session.connection().execute(statement, params).rowcount)
