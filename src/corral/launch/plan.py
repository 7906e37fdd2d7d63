"""What a backend executes: a :class:`LaunchPlan` of :class:`NodePlan` of :class:`ProcessPlan`.

Nomenclature (the files: :mod:`corral.launch.layout`):
- *job dir*: shared by every attempt and every node (stdouterr/, checkpoints/, shared/, attempts/).
- *attempt dir*: ``<job dir>/attempts/<n>/``, where the backend keeps each process's exit record.
- *rank*: a process of the job, numbered from 0 across all nodes (for ``custom``,
  one process per node, rank = node rank). Logs are ``stdouterr/attempt-<n>/stdout-<rank>.txt``.
- *node root*: a node's own disk (on the local backend, a folder per virtual node);
  the job's temp directory — which is also its working directory, where its code is
  unpacked — and mounts live there.

Directories and files are few on purpose: on the disks measured here, creating one
costs 0.25 to 0.45 ms of CPU, the largest part of dispatching a short job.

Plans are plain data: no I/O happens while building one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from corral.launch.layout import JobLayout


@dataclass(frozen=True)
class NodeAssignment:
    """One node given to a job, in rank order."""

    node_id: int
    name: str
    ip: str
    root: str
    gpus: tuple[int, ...] = ()
    cpus: int = 1
    memory: int | None = None


@dataclass(frozen=True)
class JobContext:
    """Who the job is and where its directories are: everything but the node."""

    workspace: str
    experiment: str
    job_name: str
    job_uid: str
    attempt: int
    job_dir: str
    spec: Any  # corral.core.specs.JobSpec; Any keeps this module free of pydantic at import
    secrets: dict[str, str] = field(default_factory=dict)
    code_archive: str | None = None
    #: Ports reserved for this attempt (see :func:`corral.launch.planner.ports_needed`).
    ports: tuple[int, ...] = ()
    #: The Unix account the job runs as (None: the server's own).
    run_as: str | None = None
    #: Inputs to stage in from volumes (``corral.data.volumes.staged``), each with its store's credentials.
    staged_inputs: tuple[Any, ...] = ()
    #: Outputs to upload to volumes when the processes have ended (the same form: id, source, store, and the path
    #: in the store that the job's own folder goes under).
    staged_outputs: tuple[Any, ...] = ()
    #: The machine's cache of staged inputs (a folder of its own disk that all its nodes share), and its limit.
    input_cache: str = ""
    input_cache_limit: int = 0
    #: The Python environment its processes run in (an ``EnvironmentSpec`` as JSON, ``{"server": True}`` for the
    #: server's own; None: the machine's, with only ``corral.runtime`` added).
    environment: dict[str, Any] | None = None

    @property
    def layout(self) -> JobLayout:
        return JobLayout(self.job_dir)

    @property
    def attempt_dir(self) -> str:
        return self.layout.attempt_dir(self.attempt)

    @property
    def stdouterr_dir(self) -> str:
        """This attempt's logs (every attempt keeps its own)."""
        return self.layout.logs_dir(self.attempt)


@dataclass(frozen=True)
class ProcessPlan:
    rank: int
    node_rank: int
    #: Shell text, evaluated by ``/bin/sh`` in the node's working directory.
    command: str
    env: dict[str, str]
    stdout: str
    stderr: str
    #: The command's children may leave its process group (mpirun's ranks do): end them by session.
    sweep_session: bool = False


@dataclass(frozen=True)
class NodePlan:
    rank: int
    node_id: int
    node_name: str
    #: The node's job temp directory, also the working directory.
    workdir: str
    #: Runs on every node before any process of the job starts on any node.
    prepare_command: str | None
    prepare_log: str
    #: In rank order; MPI toolkits have processes only on the first node (mpirun starts the ranks).
    processes: tuple[ProcessPlan, ...]
    prepare_env: dict[str, str] = field(default_factory=dict)
    code_archive: str | None = None
    #: Where the node is reached (a backend whose nodes are other machines finds the node by it).
    ip: str = ""
    #: The log of building the job's environment on this node (the prepare writes it where
    #: ``CORRAL_ENVIRONMENT_LOG`` says: a backend whose nodes have disks of their own points it there, and brings it
    #: back like the prepare's log).
    environment_log: str | None = None


@dataclass(frozen=True)
class LaunchPlan:
    job_uid: str
    attempt: int
    attempt_dir: str
    #: Directories to create once for the whole job before any node starts (the attempt dir among them).
    shared_dirs: tuple[str, ...]
    nodes: tuple[NodePlan, ...]
    grace_seconds: float
    #: Values masked in logs served to users.
    secret_values: tuple[str, ...] = ()
    #: Files to write (path, content) with the shared directories, e.g. an MPI hostfile.
    files: tuple[tuple[str, str], ...] = ()
    ports: tuple[int, ...] = ()
    #: Where the job's checkpoints are: a new attempt starts from the newest (``CORRAL_RESUMED_FROM``).
    checkpoint_dir: str | None = None
    #: The Unix account every process runs as (None: the server's own). With one, it owns ``owned_dirs`` (the
    #: folders the job writes) and all in them (made if missing); the folders above them stay the server's,
    #: opened for passage only (0711).
    run_as: str | None = None
    owned_dirs: tuple[str, ...] = ()
    #: What runs once every process has exited 0, before the job counts as succeeded: one process per node that
    #: uploads its outputs to their volumes (``corral.data.upload``). Its ``attempt`` is this plan's, negated.
    upload: LaunchPlan | None = None

    @cached_property
    def processes(self) -> tuple[ProcessPlan, ...]:
        return tuple(p for node in self.nodes for p in node.processes)

    @property
    def has_prepare(self) -> bool:
        return any(node.prepare_command for node in self.nodes)
