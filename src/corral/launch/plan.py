"""What a backend executes: a :class:`LaunchPlan` of :class:`NodePlan` of :class:`ProcessPlan`.

Nomenclature:
- *job dir*: ``<jobs root>/<workspace>/<experiment>/<job>/<uid>/``, shared by every
  attempt and every node (stdouterr/, checkpoints/, shared/, attempts/).
- *attempt dir*: ``<job dir>/attempts/<n>/``; each node writes ``node-<rank>.exit``
  when it ends.
- *node root*: a node's own disk (on the local backend, a folder per virtual node);
  the job's temp directory — which is also its working directory, where its code is
  unpacked — and mounts live there.

Directories and files are few on purpose: on the disks measured here, creating one
costs 0.25 to 0.45 ms of CPU, the largest part of dispatching a short job.

Plans are plain data: no I/O happens while building one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any


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

    @property
    def attempt_dir(self) -> str:
        return str(PurePath(self.job_dir, "attempts", str(self.attempt)))

    @property
    def stdouterr_dir(self) -> str:
        return str(PurePath(self.job_dir, "stdouterr"))


@dataclass(frozen=True)
class ProcessPlan:
    rank: int
    command: str
    env: dict[str, str]
    stdout: str
    stderr: str


@dataclass(frozen=True)
class NodePlan:
    rank: int
    node_id: int
    node_name: str
    #: ``<attempt dir>/node-<rank>.exit``: the node's exit record, the backend's bookkeeping.
    exit_file: str
    #: The node's job temp directory, also the working directory.
    workdir: str
    prepare_command: str | None
    prepare_log: str
    processes: tuple[ProcessPlan, ...]
    code_archive: str | None = None


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
