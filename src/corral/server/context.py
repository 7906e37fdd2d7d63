"""What every request handler and service needs: settings, database, control loop, backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from sqlalchemy.orm import Session

from corral.backends.base import Backends
from corral.core.models import Role
from corral.scheduler.policy import QueuedJob
from corral.server.audit import AuditLog
from corral.server.auth import Principal
from corral.server.services.admission import Admission
from corral.server.services.lookup import NameCache
from corral.server.services.submission import GroupCommit
from corral.server.settings import Settings
from corral.server.waiters import JobWaiters
from corral.store.db import Database

T = TypeVar("T")

if TYPE_CHECKING:
    from corral.server.array_driver import ArrayDriver
    from corral.server.metrics_reader import ReaderProcess
    from corral.server.sweep_driver import SweepDriver


class LoopControl(Protocol):
    """What the server asks of the control loop: the :class:`~corral.scheduler.loop.Controller` in this
    process, or :class:`~corral.server.loop_process.LoopProcess` for one in a process of its own."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def wake(self) -> None: ...
    def health(self) -> dict[str, object]: ...
    def jobs_submitted(self, jobs: list[QueuedJob]) -> None: ...
    def job_dequeued(self, job_id: int) -> None: ...
    def policy_changed(self) -> None: ...
    def preempt_node(self, node_id: int) -> None: ...
    def request_terminate(self, job_id: int) -> None: ...


@dataclass
class ServerContext:
    settings: Settings
    db: Database
    controller: LoopControl
    waiters: JobWaiters
    names: NameCache
    #: Stores submissions, many in one transaction.
    submissions: GroupCommit
    admission: Admission
    backends: Backends
    audit: AuditLog
    metrics: ReaderProcess
    #: Set once the context is made (the driver submits through it).
    sweeps: SweepDriver = field(init=False)
    arrays: ArrayDriver = field(init=False)
    #: Token hash -> principal: emptied whenever a user or token changes.
    principals: dict[str, Principal] = field(default_factory=dict)
    #: User -> their role in each workspace where they hold one: emptied whenever members, users or workspaces
    #: change.
    roles: dict[str, dict[str, Role]] = field(default_factory=dict)

    async def read(self, query: Callable[[Session], T]) -> T:
        """A short read of the database, for a route that awaits it. On SQLite it runs in the event loop's own
        thread: handing it to a worker thread and back cost more than the read itself (a job's GET: 2.0-2.7 against
        3.0-3.9 ms of the server's CPU, ``benchmarks/api_requests.py``). Across a network (PostgreSQL) it runs in
        a worker thread, so that the event loop goes on while it waits. Reads that may be long (job lists of up
        to 10,000, files, logs) stay in plain route functions, which FastAPI runs in its thread pool."""
        if self.db.is_sqlite:
            return self._read(query)
        return await asyncio.to_thread(self._read, query)

    def _read(self, query: Callable[[Session], T]) -> T:
        with self.db.read() as session:
            return query(session)
