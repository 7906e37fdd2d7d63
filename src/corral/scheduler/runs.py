"""Runs: what the control loop keeps about each attempt in flight, and how one is built from the database.

:func:`load_for_launch` reads what placing a job needs (two queries for many jobs); :func:`new_run` builds the
attempt's launch plan and its :class:`~corral.scheduler.outcome.Run`; :func:`queued_again` is the queue's view
of a job a run sends back. Jobs enter the policy's queue as :class:`~corral.scheduler.policy.QueuedJob` through
:func:`queued_job` alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from corral.backends.base import NodeProvider
from corral.core.errors import UnloadableSpec
from corral.core.spec_parsing import unloadable
from corral.core.specs import ClusterSpec, JobSpec, store_location
from corral.core.states import JobState, NodeState
from corral.data.volumes import VolumeNotFound, staged, staged_mounts, volume_rows
from corral.scheduler.outcome import RetryPolicy, Run
from corral.scheduler.plans import ClusterToRun, JobToRun, PlacedNode, job_spec, plan_for
from corral.scheduler.policy import FreeNode, Placement, QueuedJob, RunningJob
from corral.store.tables import (
    AttemptRow,
    ClusterRow,
    ExperimentRow,
    JobRow,
    NodeRow,
    WorkspaceRow,
    load_cluster_spec,
    table,
)
from corral.store.transitions import Move, transition_jobs, transition_nodes_each


@dataclass(frozen=True)
class Placed:
    """What building a job's launch plan needs from the database, loaded within a pass."""

    job: JobToRun
    spec: JobSpec
    workspace: str
    experiment: str
    cluster: ClusterToRun
    #: Its inputs and outputs on volumes, as the nodes stage them in and upload them (``corral.data.volumes.staged``).
    staged_inputs: tuple[dict[str, Any], ...] = ()
    staged_outputs: tuple[dict[str, Any], ...] = ()


_JOBS = table(JobRow)
_TO_RUN_COLUMNS = [_JOBS.c[f.name] for f in fields(JobToRun)]
_WORKSPACES, _EXPERIMENTS = table(WorkspaceRow), table(ExperimentRow)
#: A pass's placed jobs as plain rows, with their workspace's and experiment's names (built once).
_TO_RUN = (
    select(*_TO_RUN_COLUMNS, _WORKSPACES.c.name, _EXPERIMENTS.c.name)
    .select_from(_JOBS)
    .join(_WORKSPACES, _WORKSPACES.c.id == _JOBS.c.workspace_id)
    .join(_EXPERIMENTS, _EXPERIMENTS.c.id == _JOBS.c.experiment_id)
    .where(_JOBS.c.id.in_(bindparam("ids", expanding=True)))
)
_CLUSTERS = table(ClusterRow)
_CLUSTERS_TO_RUN = select(_CLUSTERS.c.id, _CLUSTERS.c.name, _CLUSTERS.c.spec).where(
    _CLUSTERS.c.id.in_(bindparam("ids", expanding=True))
)
#: Cluster id -> its stored spec and that spec parsed: a pass parses a cluster's spec again only once it changed
#: (parsing is a function of the stored spec alone, so an entry that matches is right whichever database it
#: came from).
_parsed_clusters: dict[int, tuple[dict[str, Any], ClusterSpec]] = {}


def _cluster_spec(cluster_id: int, name: str, stored: dict[str, Any]) -> ClusterSpec:
    """The cluster's stored spec, parsed; UnloadableSpec for one this version no longer reads."""
    known = _parsed_clusters.get(cluster_id)
    if known is None or known[0] != stored:
        if len(_parsed_clusters) >= 1024:
            _parsed_clusters.clear()
        known = _parsed_clusters[cluster_id] = (stored, load_cluster_spec(name, stored))
    return known[1]


def queued_job(
    *,
    job_id: int,
    cluster_id: int,
    priority: int,
    node_count: int,
    user: str,
    workspace_id: int,
    wall_clock: float | None,
    gpus_per_node: int,
    queued_since: float,
) -> QueuedJob:
    """A job as the queue's policy sees it (jobs keep their submission order: ``seq`` is the job's id)."""
    return QueuedJob(
        job_id=job_id, cluster_id=cluster_id, priority=priority, seq=job_id, node_count=node_count, user=user,
        workspace_id=workspace_id, wall_clock=wall_clock, gpus_per_node=gpus_per_node, queued_since=queued_since,
    )  # fmt: skip


def queued_again(run: Run, now: float) -> QueuedJob:
    """The job of a run that sent it back to the queue, as the policy sees it."""
    assert run.shape is not None
    shape = run.shape
    return queued_job(
        job_id=run.job_id, cluster_id=shape.cluster_id, priority=shape.priority, node_count=shape.node_count,
        user=run.user, workspace_id=shape.workspace_id, wall_clock=shape.wall_clock,
        gpus_per_node=shape.gpus_per_node, queued_since=now,
    )  # fmt: skip


def load_for_launch(session: Session, job_ids: list[int]) -> tuple[dict[int, Placed], dict[int, tuple[JobToRun, str]]]:
    """The jobs with their workspace's and experiment's names and their cluster (two queries), and apart those
    whose stored spec (or their cluster's) no longer loads, each with what is wrong."""
    width = len(_TO_RUN_COLUMNS)
    rows = [(JobToRun(*r[:width]), r[width], r[width + 1]) for r in session.execute(_TO_RUN, {"ids": job_ids})]
    cluster_ids = list({job.cluster_id for job, _, _ in rows})
    clusters: dict[int, ClusterToRun] = {}
    unreadable: dict[int, str] = {}  # cluster id -> why its stored spec does not load, the cluster named
    mounting: set[int] = set()
    for cluster_id, name, stored in session.execute(_CLUSTERS_TO_RUN, {"ids": cluster_ids}):
        try:
            clusters[cluster_id] = ClusterToRun(cluster_id, name, _cluster_spec(cluster_id, name, stored))
        except UnloadableSpec as exc:
            unreadable[cluster_id] = exc.message
        if stored.get("mounts"):
            mounting.add(cluster_id)
    placed: dict[int, Placed] = {}
    broken: dict[int, tuple[JobToRun, str]] = {}
    #: The volumes of the workspaces whose jobs stage inputs from them (one query, only where any does).
    staging = [job.workspace_id for job, _, _ in rows if uses_volumes(job.spec) or job.cluster_id in mounting]
    volumes = volume_rows(session, staging)
    for job, workspace, experiment in rows:
        if job.cluster_id is None:  # a queued or running job keeps its cluster (deletion needs none)
            continue
        try:
            spec = job_spec(job)
            why = unreadable.get(job.cluster_id)
        except ValidationError as exc:
            why = unloadable(exc)
        if why is not None:
            broken[job.id] = (job, why)
            continue
        cluster = clusters[job.cluster_id]
        try:
            held = volumes.get(job.workspace_id, [])
            inputs = staged(spec.inputs, held, "inputs") + staged_mounts(cluster.parsed.mounts, spec.mounts, held)
            outputs = staged(spec.outputs, held, "outputs")
        except VolumeNotFound as exc:  # a volume deleted since the job was submitted
            broken[job.id] = (job, str(exc))
            continue
        placed[job.id] = Placed(job, spec, workspace, experiment, cluster, inputs, outputs)
    return placed, broken


def uses_volumes(stored: dict[str, Any]) -> bool:
    """Whether a job's spec (as stored) has an input, an output or a mount on a volume."""
    items = [*(stored.get("inputs") or []), *(stored.get("outputs") or [])]
    return bool(stored.get("mounts")) or any(
        isinstance(i, dict) and store_location(str(i.get("path", ""))) for i in items
    )


def new_run(
    placed: Placed,
    attempt_id: int,
    nodes: Sequence[PlacedNode],
    ports: tuple[int, ...],
    *,
    started_at: float,
    provider: NodeProvider,
) -> Run:
    """The run of the job's current attempt (its number is the job's attempt count), with its plan."""
    job = placed.job
    plan = plan_for(
        job=job,
        spec=placed.spec,
        attempt=job.attempt_count,
        ports=ports,
        workspace=placed.workspace,
        experiment=placed.experiment,
        cluster=placed.cluster,
        nodes=nodes,
        provider=provider,
        staged_inputs=placed.staged_inputs,
        staged_outputs=placed.staged_outputs,
    )
    limit = placed.spec.limits.max_wall_clock
    shape = RunningJob(
        job_id=job.id, cluster_id=job.cluster_id or 0, priority=job.priority, node_count=job.node_count,
        workspace_id=job.workspace_id, started_at=started_at, wall_clock=limit,
        gpus_per_node=placed.cluster.parsed.node.gpus,
    )  # fmt: skip
    retry = placed.spec.retry
    every = min((o.sync_every for o in placed.spec.outputs if o.sync_every), default=None)
    return Run(
        job_id=job.id,
        attempt_id=attempt_id,
        plan=plan,
        started_at=started_at,
        deadline=started_at + limit if limit else None,
        shape=shape,
        user=job.submitted_by,
        retry=RetryPolicy(retry.max_attempts, frozenset(retry.on), frozenset(retry.exit_codes)),
        sync_every=every,
        next_sync=started_at + every if every and plan.upload is not None else None,
    )


#: A placed job whose start is committed: what to build its run from (its attempt's id, nodes and ports).
Start = tuple[Placed, int, list[PlacedNode], tuple[int, ...]]

# Built once (the pass's hot path): the placed nodes as a plan needs them, and the attempts' rows.
_NODES, _ATTEMPTS = table(NodeRow), table(AttemptRow)
_PLACED_NODES = select(_NODES.c.id, _NODES.c.name, _NODES.c.ip, _NODES.c.gpus).where(
    _NODES.c.id.in_(bindparam("ids", expanding=True))
)
_INSERT_ATTEMPTS = insert(_ATTEMPTS).returning(_ATTEMPTS.c.job_id, _ATTEMPTS.c.id)
_FREE_NODES = select(_NODES.c.id, _NODES.c.cluster_id, _NODES.c.index).where(
    _NODES.c.state == NodeState.IDLE, _NODES.c.job_id.is_(None)
)


def free_nodes(session: Session) -> list[FreeNode]:
    """The nodes a placement may take: idle, and held by no job."""
    return [FreeNode(*row) for row in session.execute(_FREE_NODES)]


def commit_placements(
    session: Session,
    placements: list[Placement],
    placed: dict[int, Placed],
    ports: dict[int, tuple[int, ...]],
    now: float,
) -> tuple[list[Start], set[int]]:
    """Commit the placements that have their ports: the jobs running (a new attempt each), their nodes taken,
    their attempt rows written, in a few batched statements. Returns the starts, and the ids of the jobs moved
    (a job terminated or deleted meanwhile is not). A node no longer idle fails the pass: it is done again."""
    placements = [p for p in placements if p.job_id in ports]
    jobs = {job_id: p.job for job_id, p in placed.items()}
    moves = [
        Move(jobs[p.job_id], JobState.RUNNING, changes={
            "started_at": now, "exit_code": None, "attempt_count": jobs[p.job_id].attempt_count + 1, "reason": None,
        })
        for p in placements
    ]  # fmt: skip
    moved = {m.job.id for m in transition_jobs(session, moves, at=now)}
    placements = [p for p in placements if p.job_id in moved]
    if not placements:
        return [], moved
    node_ids = [n for p in placements for n in p.node_ids]
    rows = session.execute(_PLACED_NODES, {"ids": node_ids})
    nodes: dict[int, PlacedNode] = {n.id: cast(PlacedNode, n) for n in rows}
    taken = [{"id": n, "job_id": p.job_id} for p in placements for n in p.node_ids]
    if transition_nodes_each(session, NodeState.RUNNING, taken, only_from=[NodeState.IDLE]) != len(taken):
        raise RuntimeError("a placement found a node no longer idle; the pass is done again from the database")
    attempt_rows = [
        {
            "job_id": p.job_id,
            "number": jobs[p.job_id].attempt_count,
            "node_ids": list(p.node_ids),
            "node_names": [nodes[n].name for n in p.node_ids],
            "started_at": now,
            "ports": list(ports[p.job_id]),
        }
        for p in placements
    ]
    attempt_ids: dict[int, int] = dict(session.connection().execute(_INSERT_ATTEMPTS, attempt_rows).all())
    starts = [
        (placed[p.job_id], attempt_ids[p.job_id], [nodes[n] for n in p.node_ids], ports[p.job_id]) for p in placements
    ]
    return starts, moved
