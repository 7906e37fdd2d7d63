"""What the server's drivers share (the sweep driver, the array driver): a thread that makes a pass every
:data:`POLL_SECONDS`, or at once when woken (a sweep or an array was made) or nudged (a job ended, metrics were
stored), and acting as the user whose jobs a driver submits and stops.

A driver with nothing to drive (its last pass found no running sweep, no live array) is idle: nudges pass it by,
and it looks again every :data:`IDLE_SECONDS` only, so that a server running plain jobs does not pay for it on
each job's end."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from sqlalchemy import select

from corral.core.errors import CorralError
from corral.server.access import Access
from corral.server.auth import Principal
from corral.store.tables import PrincipalRow

if TYPE_CHECKING:
    from corral.server.context import ServerContext

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
#: How often an idle driver looks (a sweep or an array made wakes it at once).
IDLE_SECONDS = 5.0


class Driver(ABC):
    #: The thread's name.
    name = "corral-driver"

    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        #: Whether its last pass found anything to drive (a first pass looks at what is stored).
        self._busy = True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def wake(self) -> None:
        """Something new to drive (a sweep or an array was made, or terminated): a pass now."""
        self._busy = True
        self._wake.set()

    def nudge(self) -> None:
        """Jobs ended, or metrics were stored: a pass now, where this driver drives anything."""
        if self._busy:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(POLL_SECONDS if self._busy else IDLE_SECONDS)
            self._wake.clear()
            if self._stopped.is_set():
                return
            self._busy = self.pass_once()

    @abstractmethod
    def pass_once(self) -> bool:
        """Look at what is stored, and do what it says is due; whether there was anything to drive."""

    def acting_as(self, user: str, workspace: str) -> Access:
        """``user`` (who made the sweep or submitted the array) in ``workspace``: their jobs are theirs (fair
        share, their Unix account); they may stop them (as an owner would)."""
        with self._ctx.db.read() as session:
            found = session.scalars(select(PrincipalRow).where(PrincipalRow.name == user)).first()
        if found is None:
            raise CorralError(f"user {user!r} is no user any more")
        principal = Principal(name=found.name, is_admin=found.is_admin, unix_user=found.unix_user)
        return Access(principal=principal, workspace=workspace, role="owner")
