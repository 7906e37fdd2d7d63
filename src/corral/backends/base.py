"""The seam between Corral and the machines it runs on: what a backend can do, as three small interfaces.

- An :class:`Executor` starts the processes of a :class:`~corral.launch.plan.LaunchPlan` (after every node's
  ``prepare.command``), tells the loop when each process has ended (:class:`ProcessExit`, through the listener
  it was given), signals them on request, and, after a server restart, says what became of the processes of a
  plan it launched before (:meth:`Executor.recover`).
- A :class:`NodeProvider` says whether a cluster's nodes can exist, gives new nodes their address and
  devices, and owns the files nodes keep (each node's directory, a job's temp dirs on every node).
- :class:`NodeAccess` runs a command on a node and reads a node's files, for ``cluster node exec`` and
  ``cluster node logs``.

:class:`Backends` holds one of each; the server builds it in :mod:`corral.backends.registry`, the only module
that imports a concrete backend. The scheduler, the services and the planners know these interfaces alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from corral.core.specs import ClusterSpec
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


class Executor(Protocol):
    def set_listener(self, listener: ExitListener) -> None: ...

    def launch(self, plan: LaunchPlan) -> None:
        """Prepare every node, then start every process of the plan; each process's end goes to the listener."""

    def recover(self, plan: LaunchPlan) -> None:
        """Re-attach to a plan launched by an earlier server; report each process that has already ended."""

    def signal(self, plan: LaunchPlan, *, kill: bool) -> None:
        """SIGTERM (or SIGKILL with ``kill``) every process of the plan still running, or about to."""

    def forget(self, plan: LaunchPlan) -> None:
        """The plan's attempt has ended; drop what is kept about it."""

    def end_unplanned(self, job_uid: str, attempt: int, ips: Collection[str]) -> None:
        """SIGKILL every process of an attempt whose plan cannot be rebuilt (a job found running at restart whose
        stored spec no longer loads), on the machines at ``ips``: what carries its run id (``local/reaper.py``)."""

    def close(self) -> None:
        """Stop watching. Running processes are left running: jobs outlive the server."""


@dataclass(frozen=True)
class NodeRef:
    """A node as a backend needs to know it."""

    workspace: str
    cluster: str
    name: str
    gpus: tuple[int, ...] = ()
    #: Where it is reached (a backend whose nodes are other machines finds the node by it).
    ip: str = ""


@dataclass(frozen=True)
class NewNode:
    """What a provider gives a node it adds: where it is reached, and the devices that are its alone."""

    ip: str
    gpus: tuple[int, ...] = ()


#: In a node command's environment (``NodeAccess.run``): the machine's cache (``NodeProvider.input_cache``).
CACHE_VARIABLE = "CORRAL_CACHE_DIR"
#: The most bytes of staged inputs a machine keeps by default (``CORRAL_INPUT_CACHE_LIMIT``).
DEFAULT_INPUT_CACHE_LIMIT = 20 * 2**30

#: What a backend may support beyond running nodes and processes (a cluster spec asking for one it lacks is refused).
FEATURES = frozenset({"setup", "preemption", "gpus"})


class NodeProvider(Protocol):
    #: The ``backend:`` of the cluster specs it serves.
    backend: str
    #: Which of :data:`FEATURES` it supports.
    features: frozenset[str]

    def check(self, spec: ClusterSpec, count: int) -> list[str]:
        """Raise ``InvalidSpec`` when ``count`` nodes of ``spec`` could never exist here; else warnings."""

    def new_nodes(
        self, spec: ClusterSpec, count: int, *, held_gpus: set[int], held_ips: frozenset[str] = frozenset()
    ) -> list[NewNode]:
        """Up to ``count`` new nodes; fewer while what they need is taken (``held_gpus``: other nodes' GPUs;
        ``held_ips``: other nodes' addresses, for a backend whose nodes are machines of their own)."""

    def machines(self) -> frozenset[str] | None:
        """The addresses of the machines nodes can be on now, where machines come and go outside Corral (a node
        not in use whose machine is gone is replaced); None where they are fixed. Cheap enough for every second."""

    def hold(self, ips: frozenset[str], wanted: int) -> None:
        """After every change of nodes: the addresses of the machines Corral's nodes are on, and every cluster's
        target in all. A backend whose machines are shared keeps those reserved (and lets go of the others);
        one whose machines come from an autoscaler asks it for ``wanted`` (the whole need, not an increment)."""

    def node_root(self, node: NodeRef) -> str:
        """The node's own directory (its jobs' temp dirs, its setup's output), as the node sees it."""

    def input_cache(self) -> tuple[str, int]:
        """The folder of each machine's own disk where inputs staged from volumes are kept (every node of the
        machine shares it), and how many bytes it may hold."""

    def remove_node_files(self, workspace: str, cluster: str, node: str | None = None) -> None:
        """Remove what a removed node kept, or (``node`` None) what every node of a deleted cluster kept."""

    def remove_job_files(self, job_uid: str) -> None:
        """Remove what every node kept of a deleted job."""


class NodeAccess(Protocol):
    async def run(self, node: NodeRef, argv: list[str], *, run_as: str | None = None) -> AsyncIterator[tuple[str, str]]:
        """Start ``argv`` on the node, in its directory and environment, as the Unix account ``run_as`` (None:
        the server's) (raise ``InvalidRequest`` when it cannot start); then yield ``(stream, line)`` as it writes
        and ``("exit", code)`` last. Closing the iterator early kills the command."""

    def read_text(self, node: NodeRef, relative: str) -> str:
        """A file of the node's directory ('' when there is none)."""


class Accounts(Protocol):
    """The Unix accounts users' processes run as, where the server isolates users (it runs as root)."""

    def ensure(self, user: str, unix_user: str | None) -> str:
        """The account for a new Corral user: ``unix_user`` (which must exist), else one made for them; raise
        ``InvalidRequest`` when that cannot be."""
        ...


@dataclass
class Backends:
    """The backend the server runs on, one part per interface."""

    executor: Executor
    nodes: NodeProvider
    access: NodeAccess
    #: None: every process runs as the server's own user (one-user mode).
    accounts: Accounts | None = None

    def close(self) -> None:
        self.executor.close()
