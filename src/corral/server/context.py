"""What every request handler and service needs: settings, database, control loop, backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

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
