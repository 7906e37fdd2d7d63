"""What every request handler and service needs: settings, database, control loop, backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corral.backends.base import Backends
from corral.core.models import Role
from corral.server.audit import AuditLog
from corral.server.auth import Principal
from corral.server.services.admission import Admission
from corral.server.services.lookup import NameCache
from corral.server.services.submission import GroupCommit
from corral.server.settings import Settings
from corral.server.waiters import JobWaiters
from corral.store.db import Database

if TYPE_CHECKING:
    from corral.scheduler.loop import Controller
    from corral.server.array_driver import ArrayDriver
    from corral.server.metrics_reader import ReaderProcess
    from corral.server.sweep_driver import SweepDriver


@dataclass
class ServerContext:
    settings: Settings
    db: Database
    controller: Controller
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
