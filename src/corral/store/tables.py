"""Tables. The server is the only writer.

``JobRow.state`` changes only through ``store.transitions.transition_job``,
which checks the move against ``core.states.JOB_TRANSITIONS`` and appends a
``JobEventRow`` in the same transaction; so the event table is the job's full history.
Timestamps are UTC epoch seconds (floats): cheap to compare, identical on both databases.
"""

from __future__ import annotations

from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corral.core.errors import UnloadableSpec
from corral.core.spec_parsing import unloadable
from corral.core.specs import ClusterSpec
from corral.store.sealed import SealedSecrets


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class WorkspaceRow(Base):
    __tablename__ = "workspaces"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    #: Quota: at most this many nodes / GPUs in use at once by the workspace's jobs (None: no limit).
    max_nodes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_gpus: Mapped[int | None] = mapped_column(Integer, nullable=True)


class PrincipalRow(Base):
    """Who calls the API. A token is stored only as its SHA-256."""

    __tablename__ = "principals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[float] = mapped_column(Float)
    #: When the token stops working (None: never).
    token_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: The Unix account the user's jobs, setups and node commands run as when the server runs as root
    #: (None: the server's own user).
    unix_user: Mapped[str | None] = mapped_column(String(32), nullable=True)


class MemberRow(Base):
    """A user's role in a workspace: ``reader``, ``contributor`` or ``owner`` (admins need none)."""

    __tablename__ = "workspace_members"
    __table_args__ = (UniqueConstraint("workspace_id", "principal_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)


class ExperimentRow(Base):
    __tablename__ = "experiments"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)


class VolumeRow(Base):
    """Where a workspace's data lives: a bucket, a container or a shared directory. Its credentials are sealed
    (``corral.store.sealed``) and never leave the server but to the nodes that stage a job's inputs."""

    __tablename__ = "volumes"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    #: The volume's spec without its credentials.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    credentials: Mapped[dict[str, Any]] = mapped_column(SealedSecrets, default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(64))


def load_cluster_spec(name: str, stored: dict[str, Any]) -> ClusterSpec:
    """A cluster's stored spec, parsed; UnloadableSpec naming the cluster and each field for one this version no
    longer reads (:attr:`ClusterRow.parsed`, and the control loop's plain rows)."""
    try:
        return ClusterSpec.model_validate(stored)
    except ValidationError as exc:
        raise UnloadableSpec(f"cluster {name!r}: {unloadable(exc)}") from None


class ClusterRow(Base):
    __tablename__ = "clusters"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    allocation_state: Mapped[str] = mapped_column(String(16), default="steady")
    #: The Unix account its nodes' setup runs as (its creator's; None: the server's own).
    run_as: Mapped[str | None] = mapped_column(String(32), nullable=True)
    target_nodes: Mapped[int] = mapped_column(Integer)
    warnings: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[float] = mapped_column(Float)

    @property
    def parsed(self) -> ClusterSpec:
        """The stored spec as a :class:`ClusterSpec`, parsed once per loaded row (again when ``spec`` is replaced).
        Raises UnloadableSpec (a Conflict: 409 from the API), naming the cluster and each field, for a spec this
        version no longer reads: the cluster can then be shown and deleted, nothing else."""
        cached = self.__dict__.get("_parsed")
        if cached is None or cached[0] is not self.spec:
            cached = (self.spec, load_cluster_spec(self.name, self.spec))
            self.__dict__["_parsed"] = cached
        return cached[1]


class NodeRow(Base):
    __tablename__ = "nodes"
    __table_args__ = (UniqueConstraint("cluster_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    index: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    ip: Mapped[str] = mapped_column(String(64))
    gpus: Mapped[list[Any]] = mapped_column(JSON, default=list)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    #: Why the node is unusable (its setup failed, ...).
    error: Mapped[str | None] = mapped_column(String(512), nullable=True)
    #: Since when the node has been idle (automatic scaling removes nodes idle past ``idle_timeout``).
    idle_since: Mapped[float | None] = mapped_column(Float, nullable=True)


#: The jobs that are arrays (their partial index).
ARRAYS = text("array_count IS NOT NULL")


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("experiment_id", "name"),
        Index("ix_jobs_queue", "cluster_id", "state", "priority", "id"),
        Index("ix_jobs_array", "array_id", "array_index"),
        # The array driver's look for live arrays: a few rows, however many jobs there have been.
        Index("ix_jobs_live_arrays", "state", sqlite_where=ARRAYS, postgresql_where=ARRAYS),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id", ondelete="SET NULL"), nullable=True)
    #: Kept so a job's history still names its cluster after the cluster is deleted.
    cluster_name: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    #: Changed only by ``store.transitions.transition_job`` (see module docstring).
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer)
    node_count: Mapped[int] = mapped_column(Integer)
    #: Processes (ranks, each with its logs) on the job's cluster; fixed at submission.
    rank_count: Mapped[int] = mapped_column(Integer)
    #: The validated spec with secret values removed (names kept, values masked).
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Secret values, sealed in the database (``store/sealed.py``); read when building a launch plan and to
    #: mask them in served logs.
    secrets: Mapped[dict[str, Any]] = mapped_column(SealedSecrets, default=dict)
    code_archive: Mapped[str | None] = mapped_column(String(64), nullable=True)
    job_dir: Mapped[str] = mapped_column(Text)
    submitted_by: Mapped[str] = mapped_column(String(64))
    #: The Unix account its processes run as (its submitter's; None: the server's own).
    run_as: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    terminate_requested_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: When the job last entered the queue (submission or requeue).
    queued_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: Why a queued job waits (``Priority``, ``Resources``, ``Quota``, ...); None once it runs.
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: ``limits.max_wall_clock`` in seconds, for backfill (also in the spec; here for the scheduler's query).
    wall_clock: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    #: Why a terminate request stops it, when not the user's (``Pruned`` by its sweep): its error's message.
    terminate_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: An array: its number of tasks (the scheduler never runs it; ``server/array_driver.py`` makes its tasks).
    array_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: A task of an array: the array's row, and the task's index.
    array_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True)
    array_index: Mapped[int | None] = mapped_column(Integer, nullable=True)


class AttemptRow(Base):
    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("job_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    #: Node ids in rank order.
    node_ids: Mapped[list[Any]] = mapped_column(JSON)
    node_names: Mapped[list[Any]] = mapped_column(JSON)
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: Ports reserved for the attempt's processes (PyTorch's rendezvous, TensorFlow's tasks).
    ports: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: Every metric its processes wrote is in the metric tables (set once it ended and its files were read).
    metrics_read: Mapped[bool] = mapped_column(Boolean, default=False, index=True)


class JobEventRow(Base):
    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[float] = mapped_column(Float)
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class AuditRow(Base):
    """Every request that asked to change something, allowed or not: append-only (nothing updates or deletes)."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    #: The caller's user name ('-' when its token was missing or not valid).
    user: Mapped[str] = mapped_column(String(64), index=True)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(Text)
    status: Mapped[int] = mapped_column(Integer)
    #: Where the request came from (the client's address).
    client: Mapped[str] = mapped_column(String(64))


class MetricSeriesRow(Base):
    """One metric of one rank of one attempt of a job, with what listings show (kept up to date on ingest)."""

    __tablename__ = "metric_series"
    __table_args__ = (UniqueConstraint("job_id", "attempt", "rank", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    rank: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    #: The point of the highest step.
    last_step: Mapped[int] = mapped_column(BigInteger)
    last_value: Mapped[float] = mapped_column(Float)
    min_value: Mapped[float] = mapped_column(Float)
    max_value: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class MetricPointRow(Base):
    """A series' value at a step: a step reported again replaces it (a re-read file, a retried request)."""

    __tablename__ = "metric_points"
    #: SQLite keeps the points in the primary key's order (no second copy of the key in an index): a series' range
    #: is read in one pass.
    __table_args__ = {"sqlite_with_rowid": False}
    series_id: Mapped[int] = mapped_column(ForeignKey("metric_series.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    at: Mapped[float] = mapped_column(Float)


class SweepRow(Base):
    """A hyperparameter sweep: its spec, its state, and who made it (its trials are submitted as them)."""

    __tablename__ = "sweeps"
    __table_args__ = (UniqueConstraint("experiment_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: running, succeeded (its budget spent), failed (max_failed_trials), terminated.
    state: Mapped[str] = mapped_column(String(16), index=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class TrialRow(Base):
    """One trial of a sweep: its parameters (and the sampler's notes on them), its job, and how it ended. Written
    before its job is submitted (``job_id`` empty until then), so a restarted server finds every trial it made."""

    __tablename__ = "sweep_trials"
    __table_args__ = (UniqueConstraint("sweep_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    #: The sampler's parameters (a dict parameter as its index).
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Optuna's system attributes of the trial (the grid sampler's grid point), to rebuild the study.
    notes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    job_name: Mapped[str] = mapped_column(String(64))
    #: pending (its job not yet submitted), running, complete, pruned, failed.
    state: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)


def table(row: type[Base]) -> Table:
    """A row class's table, for Core statements on the hot paths (built once, no ORM objects)."""
    return cast(Table, row.__table__)
