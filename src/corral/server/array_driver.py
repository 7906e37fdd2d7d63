"""Makes the tasks of job arrays as the queue can take them, and ends each array once its tasks have ended.

An array is one job row (``JobRow.array_count``), running from its submission, that the scheduler never runs.
Its tasks are ordinary jobs (``<array>.<index>``, ``array_id`` and ``array_index`` set), made by this driver a
few at a time: at most ``parallelism`` queued or running (else twice the cluster's nodes, so that a freed node
always finds one waiting). A 10,000-task array is one row at submission. Every ``drivers.POLL_SECONDS``, or at once
when an array is submitted or a job ends, the driver for each array:

- makes its next tasks, index by index, all asked of the group commit before any is waited for (so they are
  stored in one transaction): a task that exists already (made before a crash, or by a terminate of its index)
  is skipped, so none is made twice;
- counts an index failed once its task failed after its own attempts (``retry_per_index``: each index has its
  own), and stops making tasks once ``max_failed`` indexes failed;
- terminates its tasks when the array is terminated;
- ends the array once every task it made has ended: ``succeeded`` when all did, ``failed`` with the failed
  indexes, or ``terminated``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from corral.core.errors import AlreadyExists, Conflict, CorralError
from corral.core.states import ErrorCode, JobState
from corral.server.access import Access
from corral.server.drivers import Driver
from corral.server.services import arrays, commands
from corral.server.services.submission import Stored
from corral.store.tables import ClusterRow, ExperimentRow, JobRow, WorkspaceRow
from corral.store.transitions import transition_job

if TYPE_CHECKING:
    from corral.server.context import ServerContext

log = logging.getLogger(__name__)
#: Tasks made in one pass of one array.
BATCH = 200
LIVE = (JobState.QUEUED.value, JobState.RUNNING.value, JobState.TERMINATING.value)


class ArrayDriver(Driver):
    name = "corral-arrays"

    def __init__(self, ctx: ServerContext) -> None:
        super().__init__(ctx)
        #: Per array: the lowest index not yet known to be made.
        self._next: dict[int, int] = {}

    def pass_once(self) -> bool:
        with self._ctx.db.read() as session:
            arrays = session.execute(
                select(JobRow, WorkspaceRow.name, ExperimentRow.name)
                .join(WorkspaceRow, WorkspaceRow.id == JobRow.workspace_id)
                .join(ExperimentRow, ExperimentRow.id == JobRow.experiment_id)
                .where(JobRow.array_count.is_not(None), JobRow.state.in_(LIVE))
            ).all()
        for gone in set(self._next) - {row.id for row, _, _ in arrays}:
            del self._next[gone]
        for row, workspace, experiment in arrays:
            try:
                self._advance(row, workspace, experiment)
            except Exception:  # the next pass goes on from what is stored
                self._next.pop(row.id, None)
                log.exception("array %s: this pass failed", row.name)
        return bool(arrays)

    def _advance(self, row: JobRow, workspace: str, experiment: str) -> None:
        count = row.array_count
        assert count is not None
        with self._ctx.db.read() as session:
            states = dict(
                session.execute(
                    select(JobRow.state, func.count()).where(JobRow.array_id == row.id).group_by(JobRow.state)
                ).all()
            )
            if row.id not in self._next:
                made = session.scalars(select(JobRow.array_index).where(JobRow.array_id == row.id))
                self._next[row.id] = _first_missing({i for i in made if i is not None})
        live = sum(states.get(s, 0) for s in LIVE)
        failed = states.get(JobState.FAILED.value, 0)
        spec = row.spec["array"]
        if row.state == JobState.TERMINATING:
            self._terminate_tasks(row, workspace, experiment, self.acting_as(row.submitted_by, workspace))
            if not live:
                self._end(row, JobState.TERMINATED, ErrorCode.TERMINATED, "terminated on request")
            return
        stopping = spec.get("max_failed") is not None and failed >= spec["max_failed"]
        if not stopping and self._next[row.id] < count:  # more to make, as the window allows
            window = spec.get("parallelism") or 2 * self._cluster_nodes(row)
            if window - live > 0:
                self._make(row, workspace, experiment, min(window - live, BATCH))
            return
        if live:
            return
        if states.get(JobState.SUCCEEDED.value, 0) == count:
            self._end(row, JobState.SUCCEEDED, None, None)
            return
        with self._ctx.db.read() as session:
            status = arrays.array_status(session, row)
        shown = ", ".join(str(i) for i in status.failed_indexes[:20]) + (
            " …" if len(status.failed_indexes) > 20 else ""
        )
        not_run = count - sum(states.values())
        why = f" (max_failed={spec['max_failed']}: {not_run} indexes not run)" if stopping else ""
        message = f"{len(status.failed_indexes)} of {count} indexes did not succeed: {shown}{why}"
        self._end(row, JobState.FAILED, ErrorCode.JOB_FAILED, message)

    def _make(self, row: JobRow, workspace: str, experiment: str, want: int) -> None:
        """Make up to ``want`` tasks from the next index on: all asked for, then waited for (the group commit
        stores them in one transaction)."""
        count = row.array_count
        assert count is not None
        asked: list[tuple[int, Future[list[Stored]]]] = []
        refused: str | None = None  # why the array cannot go on
        while len(asked) < want and self._next[row.id] < count:
            index = self._next[row.id]
            try:
                asked.append((index, commands.make_array_task(self._ctx, row, workspace, experiment, index)))
            except CorralError as exc:  # its cluster was deleted, say: the array cannot go on
                refused = f"task {index} was refused: {exc.message}"
                break
            self._next[row.id] = index + 1
        for index, future in asked:
            try:
                future.result()
            except AlreadyExists:  # made before a crash, or by a terminate of its index
                pass
            except CorralError as exc:
                refused = refused or f"task {index} was refused: {exc.message}"
        if refused is not None:
            self._end(row, JobState.FAILED, ErrorCode.LAUNCH_FAILED, refused)

    def _terminate_tasks(self, row: JobRow, workspace: str, experiment: str, access: Access) -> None:
        with self._ctx.db.read() as session:
            names = list(
                session.scalars(
                    select(JobRow.name).where(
                        JobRow.array_id == row.id, JobRow.state.in_([JobState.QUEUED, JobState.RUNNING])
                    )
                )
            )
        for name in names:
            with contextlib.suppress(Conflict):  # it ended meanwhile
                commands.terminate_job(self._ctx, workspace=workspace, experiment=experiment, name=name, access=access)

    def _cluster_nodes(self, row: JobRow) -> int:
        with self._ctx.db.read() as session:
            cluster = session.get(ClusterRow, row.cluster_id) if row.cluster_id is not None else None
            scale = (cluster.spec or {}).get("scale", {}) if cluster is not None else {}
        return max(1, int(scale.get("max_nodes") or scale.get("nodes") or 1))

    def _end(self, row: JobRow, state: JobState, code: ErrorCode | None, message: str | None) -> None:
        now = time.time()
        with self._ctx.db.write() as session:
            current = session.get(JobRow, row.id)
            assert current is not None
            exit_code = 0 if state == JobState.SUCCEEDED else None
            transition_job(session, current, state, reason=code or "Exited", message=message, at=now, ended_at=now,
                           error_code=code, error_message=message, exit_code=exit_code)  # fmt: skip
        self._next.pop(row.id, None)
        self._ctx.waiters.notify([row.id])


def _first_missing(made: set[int]) -> int:
    index = 0
    while index in made:
        index += 1
    return index
