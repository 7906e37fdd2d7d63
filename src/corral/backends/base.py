"""The contract between the control loop and a backend.

A backend starts the processes of a :class:`~corral.launch.plan.LaunchPlan` (after
every node's ``prepare.command``), tells the loop when each process has ended
(:class:`ProcessExit`, through the listener it was given), signals them on request,
and, after a server restart, says what became of the processes of a plan it
launched before (:meth:`Backend.recover`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from corral.launch.plan import LaunchPlan


class ExitKind(StrEnum):
    EXITED = "exited"  # the process ended with exit_code
    PREPARE_FAILED = "prepare_failed"  # a node's prepare.command failed, so the process never started
    LOST = "lost"  # the process vanished without recording an exit
    NOT_STARTED = "not_started"  # found after a restart: the attempt was never launched
    LAUNCH_FAILED = "launch_failed"  # the backend could not start it (message says why)


@dataclass(frozen=True)
class ProcessExit:
    job_uid: str
    attempt: int
    #: The process's rank (``ProcessPlan.rank``).
    rank: int
    kind: ExitKind
    exit_code: int | None = None
    #: What happened, where the kind and code alone do not say it (which node's prepare, which MPI rank).
    message: str | None = None


ExitListener = Callable[[ProcessExit], None]


class Backend(Protocol):
    def set_listener(self, listener: ExitListener) -> None: ...

    def launch(self, plan: LaunchPlan) -> None:
        """Prepare every node, then start every process of the plan; each process's end goes to the listener."""

    def recover(self, plan: LaunchPlan) -> None:
        """Re-attach to a plan launched by an earlier server; report each process that has already ended."""

    def signal(self, plan: LaunchPlan, *, kill: bool) -> None:
        """SIGTERM (or SIGKILL with ``kill``) every process of the plan still running, or about to."""

    def forget(self, plan: LaunchPlan) -> None:
        """The plan's attempt has ended; drop what is kept about it."""

    def close(self) -> None:
        """Stop watching. Running processes are left running: jobs outlive the server."""
