"""Resources the API returns and the request bodies it takes, named by role.

``JobCreate`` is what a client sends; ``Job`` is what the API returns. Secret
values never appear in a returned model: ``Job.spec.secrets`` maps each name
to ``"***"``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from corral.core.specs import ClusterSpec, Int, JobSpec, Name
from corral.core.states import JobState, NodeState

SECRET_MASK = "***"


class Public(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- requests


#: A user's name: like other names, and also ``@`` (an e-mail address).
USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
#: A metric's name: ``loss``, ``val/acc``, ``lr_0`` (what the JSONL file, a pattern's groups and reports give).
METRIC_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_./:-]{0,127}$"
#: Points in one ``POST …/metrics`` (its body is also within the server's request size).
MAX_REPORTED_POINTS = 1000
UserName = Annotated[str, StringConstraints(pattern=USER_NAME_PATTERN)]

#: What a member of a workspace may do, each role all that the one before may: ``reader`` sees its jobs, logs,
#: clusters and usage; ``contributor`` also submits jobs and terminates and deletes their own; ``owner`` also
#: manages its members, clusters (``node exec`` included), experiments and every member's jobs.
Role = Literal["reader", "contributor", "owner"]
ROLES: tuple[Role, ...] = ("reader", "contributor", "owner")


class WorkspaceCreate(Strict):
    name: Name
    #: A user who becomes the workspace's owner (admins only; a user who creates one owns it).
    owner: UserName | None = None


class MemberSet(Strict):
    role: Role


class ExperimentCreate(Strict):
    name: Name


class JobCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"spec": {"cluster": "local", "custom": {"command": "echo hello"}}}]}
    )

    #: A mapping validated as ``JobSpec`` by the server (which words its errors), described as one in the schema.
    spec: Annotated[dict[str, Any], WithJsonSchema({"allOf": [{"$ref": "#/components/schemas/JobSpec"}]})]
    name: Name | None = None
    experiment: Name | None = None
    code_archive: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------- resources


#: The largest quota (the database keeps 32-bit integers; no cluster is near it).
MAX_QUOTA = 1_000_000_000


class Quota(Public):
    """At most this many nodes / GPUs in use at once by a workspace's jobs; None: no limit."""

    max_nodes: Int | None = Field(None, ge=0, le=MAX_QUOTA)
    max_gpus: Int | None = Field(None, ge=0, le=MAX_QUOTA)


class Workspace(Public):
    name: str
    created_at: datetime
    quota: Quota = Quota()
    #: The caller's role in it (``admin`` for a server admin who holds none).
    role: Role | Literal["admin"] | None = None


class Member(Public):
    user: str
    role: Role
    added_at: datetime


class UserCreate(Public):
    name: UserName
    admin: bool = False
    #: The Unix account the user's jobs run as when the server runs as root (an existing account an admin
    #: names); by default the server makes one, ``corral-<name>``.
    unix_user: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] | None = None


class User(Public):
    name: str
    admin: bool
    created_at: datetime
    token_expires_at: datetime | None = None
    #: The Unix account the user's jobs run as (None: the server's own).
    unix_user: str | None = None


class AuditEntry(Public):
    """A request that asked to change something (allowed or refused, as ``status`` says)."""

    id: int
    at: datetime
    user: str
    method: str
    path: str
    status: int
    client: str


class UserCreated(User):
    #: Shown once: only its SHA-256 is stored.
    token: str


class UsageRow(Public):
    #: A user's name or an experiment's.
    name: str
    node_hours: float
    gpu_hours: float
    jobs: int


class Usage(Public):
    """Node-hours and GPU-hours of a workspace's attempts (running ones up to now), undecayed."""

    workspace: str
    by_user: list[UsageRow]
    by_experiment: list[UsageRow]


class Volume(Public):
    """A workspace's volume; its credentials are never returned (``has_credentials`` says whether it has any)."""

    name: str
    workspace: str
    kind: str
    #: The volume's spec without its credentials.
    spec: dict[str, Any]
    has_credentials: bool
    created_at: datetime
    created_by: str


class NodeCounts(Public):
    preparing: int = 0
    idle: int = 0
    running: int = 0
    unusable: int = 0
    leaving: int = 0


class Cluster(Public):
    name: str
    workspace: str
    #: None only for a cluster whose stored spec does not load in this version (its first warning says why).
    spec: ClusterSpec | None
    allocation_state: str
    current_nodes: int
    target_nodes: int
    node_counts: NodeCounts
    warnings: list[str] = []
    created_at: datetime


class Node(Public):
    name: str
    cluster: str
    index: int
    state: NodeState
    ip: str
    gpus: list[int] = []
    job: str | None = None
    experiment: str | None = None
    #: Why the node is unusable.
    error: str | None = None


class Experiment(Public):
    name: str
    workspace: str
    created_at: datetime
    job_counts: dict[str, int] = {}


class JobError(Public):
    code: str
    message: str


class Attempt(Public):
    number: int
    nodes: list[str]
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None


class ArrayStatus(Public):
    """An array's tasks: how many in all, how many made so far by state, and the indexes that failed."""

    count: int
    counts: dict[str, int] = {}
    #: Failed or terminated indexes (the first 1000).
    failed_indexes: list[int] = []


class Job(Public):
    name: str
    uid: str
    workspace: str
    experiment: str
    cluster: str
    state: JobState
    priority: str
    node_count: int
    #: Processes in all (each rank has its own logs).
    rank_count: int
    #: Why a queued job waits: ``Priority``, ``Resources``, ``Quota`` (None unless queued).
    reason: str | None = None
    #: Where a running job is (``show`` fills it): ``preparing`` (its inputs, mounts, own prepare), ``environment``
    #: (its environment is being built or found on a node), ``running`` (its processes started), ``uploading``.
    step: str | None = None
    toolkit: str
    #: None only for a job whose stored spec does not load in this version (it is failed with ``InvalidSpec``).
    spec: JobSpec | None
    submitted_by: str
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    error: JobError | None = None
    attempts: list[Attempt] = []
    nodes: list[str] = []
    #: The node of each rank in its latest attempt (``show`` and ``wait`` fill it; None where mpirun places).
    rank_nodes: list[str | None] = []
    job_dir: str
    #: An array (``spec.array``): its tasks' states; a task has ``spec.array_task``.
    array: ArrayStatus | None = None


class JobEvent(Public):
    at: datetime
    from_state: str | None
    to_state: str
    reason: str | None = None
    message: str | None = None


class FileEntry(Public):
    name: str
    path: str
    is_dir: bool
    size: int
    modified_at: datetime


class FilePage(Public):
    entries: list[FileEntry]
    next_cursor: str | None = None


class FollowEvent(Public):
    """One event of following a job (``GET …/logs?follow=true``): which fields are set depends on ``kind``.

    - ``state``: ``state``, ``reason`` (while queued), ``attempt``, ``nodes`` (once running), ``ranks``
      (those followed);
    - ``log``: ``rank``, ``node``, ``stream``, ``lines`` (whole lines as written, a ``\\r`` kept);
    - ``attempt``: ``attempt`` (the job was requeued; this attempt's lines follow);
    - ``end``: ``state``, ``exit_code``, ``error``, ``seconds`` (from start to end).
    """

    kind: str
    state: str | None = None
    reason: str | None = None
    attempt: int | None = None
    nodes: list[str] = []
    ranks: list[int] = []
    rank: int | None = None
    node: str | None = None
    stream: str | None = None
    lines: list[str] = []
    exit_code: int | None = None
    error: JobError | None = None
    seconds: float | None = None


class MetricSeries(Public):
    """One metric of one rank of one attempt: what listings show."""

    name: str
    attempt: int
    rank: int
    last_step: int
    last_value: float
    min: float
    max: float
    updated_at: datetime


class MetricPoint(Public):
    """A step's value; downsampled, a bucket of steps from ``step``: ``value`` their mean, ``min``/``max`` theirs
    (so a spike survives), ``count`` how many."""

    step: int
    value: float
    min: float
    max: float
    count: int = 1
    at: datetime


class MetricPoints(Public):
    name: str
    attempt: int
    rank: int
    #: Points in the series (at full resolution).
    total: int
    downsampled: bool
    points: list[MetricPoint]


class MetricReport(Public):
    """One point sent to ``POST …/jobs/{job}/metrics`` (``time``: epoch seconds, else when it arrived)."""

    name: Annotated[str, StringConstraints(pattern=METRIC_NAME_PATTERN)]
    value: float
    step: int = Field(ge=0, le=2**62)
    rank: int = Field(0, ge=0, le=100_000)
    time: float | None = None


class MetricReports(Public):
    points: list[MetricReport] = Field(max_length=MAX_REPORTED_POINTS)


class MetricsAccepted(Public):
    accepted: int
    #: The job is being stopped (terminated, or pruned by its sweep): report nothing more, and exit.
    stop: bool


class Trial(Public):
    """One trial of a sweep: its parameters as its job sees them, its job, and how it ended."""

    number: int
    params: dict[str, Any]
    job: str
    #: pending (its job not yet submitted), running, complete, pruned, failed, terminated.
    state: str
    #: The objective: the last value of the metric its rank 0 reported (complete trials).
    value: float | None = None
    #: Why it was pruned or failed.
    message: str | None = None
    created_at: datetime
    ended_at: datetime | None = None


class Sweep(Public):
    name: str
    workspace: str
    experiment: str
    #: running, succeeded (its trials all ran), failed (max_failed_trials), terminated.
    state: str
    message: str | None = None
    spec: dict[str, Any]
    created_by: str
    created_at: datetime
    ended_at: datetime | None = None
    #: Trials by state.
    trial_counts: dict[str, int] = {}
    best: Trial | None = None
    #: ``show``: every trial, the best first (complete ones by their objective, then running, pruned, failed).
    trials: list[Trial] = []
