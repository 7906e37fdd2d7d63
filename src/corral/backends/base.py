"""The contract between the control loop and a backend.

A backend starts the processes of a :class:`~corral.launch.plan.LaunchPlan`, tells
the loop when each node's processes have ended (:class:`NodeExit`, through the
listener it was given), signals them on request, and, after a server restart,
says what became of the nodes of a plan it launched before (:meth:`Backend.recover`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from corral.launch.plan import LaunchPlan


class ExitKind(StrEnum):
    EXITED = "exited"  # the job's command ended with exit_code
    PREPARE_FAILED = "prepare_failed"  # prepare.command ended with exit_code != 0
    LOST = "lost"  # the node's processes vanished without recording an exit
    NOT_STARTED = "not_started"  # found after a restart: the node was never launched
    LAUNCH_FAILED = "launch_failed"  # the backend could not start the node (message says why)


@dataclass(frozen=True)
class NodeExit:
    job_uid: str
    attempt: int
    rank: int
    kind: ExitKind
    exit_code: int | None = None
    message: str | None = None


ExitListener = Callable[[NodeExit], None]


class Backend(Protocol):
    def set_listener(self, listener: ExitListener) -> None: ...

    def launch(self, plan: LaunchPlan) -> None:
        """Start every node of the plan; each node's end is reported to the listener."""

    def recover(self, plan: LaunchPlan) -> None:
        """Re-attach to a plan launched by an earlier server; report each node that has already ended."""

    def signal(self, plan: LaunchPlan, *, kill: bool) -> None:
        """SIGTERM (or SIGKILL with ``kill``) every process of the plan still running, or about to."""

    def forget(self, plan: LaunchPlan) -> None:
        """The plan's attempt has ended; drop what is kept about it."""

    def close(self) -> None:
        """Stop watching. Running processes are left running: jobs outlive the server."""
