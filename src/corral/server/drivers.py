"""What the server's drivers share (the sweep driver, the array driver): a thread that makes a pass every
:data:`POLL_SECONDS`, or at once when woken (a job ended, a sweep or an array was made), and acting as the user
whose jobs a driver submits and stops."""

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


class Driver(ABC):
    #: The thread's name.
    name = "corral-driver"

    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            if self._stopped.is_set():
                return
            self.pass_once()

    @abstractmethod
    def pass_once(self) -> None:
        """Look at what is stored, and do what it says is due."""

    def acting_as(self, user: str, workspace: str) -> Access:
        """``user`` (who made the sweep or submitted the array) in ``workspace``: their jobs are theirs (fair
        share, their Unix account); they may stop them (as an owner would)."""
        with self._ctx.db.read() as session:
            found = session.scalars(select(PrincipalRow).where(PrincipalRow.name == user)).first()
        if found is None:
            raise CorralError(f"user {user!r} is no user any more")
        principal = Principal(name=found.name, is_admin=found.is_admin, unix_user=found.unix_user)
        return Access(principal=principal, workspace=workspace, role="owner")
