"""Jobs: submission, queries, termination, deletion.

Submission validates everything that can be known up front — the spec, the
cluster, whether the job could ever fit it, the code archive — so a job that
enters the queue can run. Secret values are kept apart from the spec and never
returned.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.backends.base import NodeProvider
from corral.core.errors import AlreadyExists, Conflict, CorralError, InvalidRequest, InvalidSpec, NotFound
from corral.core.models import SECRET_MASK, ArrayStatus, Attempt, Job, JobCreate, JobError, JobEvent
from corral.core.spec_parsing import parse_spec
from corral.core.specs import PRIORITY_RANK, JobSpec, node_gpus
from corral.core.states import UPLOADING_OUTPUTS, ErrorCode, JobState
from corral.data.volumes import VolumeNotFound, check_locations
from corral.launch.layout import JobLayout
from corral.launch.planner import rank_count, rank_nodes
from corral.scheduler.policy import QueuedJob
from corral.scheduler.runs import queued_job
from corral.server.access import Access
from corral.server.services import arrays, code, experiments, outputs
from corral.server.services.lookup import (
    ClusterRef,
    NameCache,
    experiment_row,
    job_row,
    stored_job_spec,
    stored_toolkit,
    workspace_row,
)
from corral.server.settings import Settings
from corral.store.db import Database
from corral.store.tables import AttemptRow, ClusterRow, ExperimentRow, JobEventRow, JobRow
from corral.store.transitions import record_created, transition_job

PRIORITY_NAME = {v: k for k, v in PRIORITY_RANK.items()}


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def to_model(row: JobRow, *, workspace: str, experiment: str, attempts: list[AttemptRow] | None = None) -> Job:
    error = JobError(code=row.error_code, message=row.error_message or "") if row.error_code else None
    attempt_models = [
        Attempt(
            number=a.number,
            nodes=list(a.node_names),
            started_at=_ts(a.started_at),
            ended_at=_ts(a.ended_at),
            exit_code=a.exit_code,
            reason=a.reason,
        )
        for a in attempts or []
    ]
    spec = stored_job_spec(row)
    return Job(
        name=row.name,
        uid=row.uid,
        workspace=workspace,
        experiment=experiment,
        cluster=row.cluster_name,
        state=JobState(row.state),
        priority=PRIORITY_NAME[row.priority],
        node_count=row.node_count,
        rank_count=row.rank_count,
        toolkit=stored_toolkit(row.spec),
        spec=spec,
        submitted_by=row.submitted_by,
        created_at=datetime.fromtimestamp(row.created_at, UTC),
        started_at=_ts(row.started_at),
        ended_at=_ts(row.ended_at),
        exit_code=row.exit_code,
        error=error,
        attempts=attempt_models,
        nodes=attempt_models[-1].nodes if attempt_models and row.state != JobState.QUEUED else [],
        job_dir=row.job_dir,
        reason=row.reason if row.state == JobState.QUEUED or _uploading(row) else None,
    )


def _uploading(row: JobRow) -> bool:
    return row.state == JobState.RUNNING and row.reason == UPLOADING_OUTPUTS


def _check_paths(spec: JobSpec) -> None:
    located = [("inputs", i, x.path) for i, x in enumerate(spec.inputs)]
    located += [("outputs", i, x.path) for i, x in enumerate(spec.outputs)]
    for kind, i, path in located:
        if "://" in path or path.startswith("$"):
            continue  # a volume's (checked against the workspace's volumes), or a mount root's, on the node
        if not PurePosixPath(path).is_absolute():
            raise InvalidSpec(
                f"{kind}.{i}.path: must be an absolute path, got {path!r}",
                details=[{"loc": f"{kind}.{i}.path", "message": "must be an absolute path"}],
            )


def _check_env_size(spec: JobSpec, limit: int) -> None:
    """Refuse at submission an environment no process could be started with (``Argument list too long``)."""
    variables = {**spec.env, **spec.secrets}
    size = sum(len(k.encode()) + len(v.encode(errors="surrogatepass")) + 2 for k, v in variables.items())
    if size > limit:
        message = f"more than the {limit} bytes a job's variables may take (server setting max_env_bytes)"
        raise InvalidSpec(
            f"job: env: with secrets, {size} bytes: {message}", details=[{"loc": "env", "message": message}]
        )


@dataclass
class _Submission:
    """A job request checked and resolved, with the row to insert."""

    spec: JobSpec
    public: JobSpec
    values: dict[str, Any]
    cluster: ClusterRef
    workspace_id: int
    experiment_id: int | None
    experiment: str

    def to_job(self, workspace: str) -> Job:
        v = self.values
        return Job(
            name=v["name"],
            uid=v["uid"],
            workspace=workspace,
            experiment=self.experiment,
            cluster=self.cluster.name,
            state=JobState(v["state"]),
            priority=self.spec.priority,
            node_count=self.spec.node_count,
            rank_count=v["rank_count"],
            toolkit=self.spec.toolkit,
            spec=self.public,
            submitted_by=v["submitted_by"],
            created_at=datetime.fromtimestamp(v["created_at"], UTC),
            job_dir=v["job_dir"],
            reason=None,
            array=ArrayStatus(count=v["array_count"]) if v.get("array_count") else None,
        )


def _check_submission(
    db: Database,
    names: NameCache,
    *,
    workspace: str,
    request: JobCreate,
    submitted_by: str,
    settings: Settings,
    run_as: str | None = None,
) -> _Submission:
    """Everything a submission checks before it is stored: the spec, its paths and sizes, the code archive,
    the cluster and whether the job could ever fit it."""
    spec = parse_spec(JobSpec, request.spec, source="job")
    if spec.code is not None:
        raise InvalidSpec(
            "code: the client packs the code directory and sends code_archive; send the spec without code",
            details=[{"loc": "code", "message": "packed by the client"}],
        )
    _check_paths(spec)
    _check_env_size(spec, settings.max_env_bytes)
    if request.code_archive and not code.has_archive(settings, workspace, request.code_archive):
        raise NotFound(f"code archive {request.code_archive} was not uploaded to workspace {workspace!r}")
    experiment_name = request.experiment or spec.experiment or "default"
    workspace_id, cluster, experiment_id = names.resolve(
        db, workspace=workspace, cluster=spec.cluster, experiment=experiment_name
    )
    on_volumes = any("://" in item.path for item in spec.inputs) or any("://" in item.path for item in spec.outputs)
    if on_volumes or spec.mounts:
        with db.read() as session:
            try:
                check_locations(session, workspace_id, spec)
            except VolumeNotFound as exc:
                raise exc.invalid_spec("job") from None
    if spec.node_count > cluster.max_nodes:
        raise InvalidSpec(
            f"node_count: cluster {cluster.name!r} has at most {cluster.max_nodes} nodes; "
            f"this job needs {spec.node_count} and could never start",
            details=[{"loc": "node_count", "message": f"more than the cluster's {cluster.max_nodes} nodes"}],
        )
    uid = uuid.uuid4().hex
    name = request.name or spec.name or f"job-{uid[:10]}"
    public = spec.model_copy(
        update={"name": name, "experiment": experiment_name, "secrets": {k: SECRET_MASK for k in spec.secrets}}
    )
    now = time.time()
    values: dict[str, Any] = {
        "uid": uid,
        "workspace_id": workspace_id,
        "cluster_id": cluster.id,
        "cluster_name": cluster.name,
        "name": name,
        "state": JobState.QUEUED.value,
        "priority": PRIORITY_RANK[spec.priority],
        "node_count": spec.node_count,
        "rank_count": rank_count(spec, cluster.gpus_per_node),
        "spec": public.model_dump(mode="json"),
        "secrets": dict(spec.secrets),
        "code_archive": request.code_archive,
        "job_dir": JobLayout.under(settings.jobs_dir, workspace, experiment_name, name, uid).job_dir,
        "submitted_by": submitted_by,
        "run_as": run_as,
        "created_at": now,
        "queued_at": now,
        "wall_clock": spec.limits.max_wall_clock,
        "attempt_count": 0,
    }
    if spec.array is not None:
        arrays.array_values(spec, values, now)
    if spec.array_task is not None:
        values["array_index"] = spec.array_task.index
        with db.read() as session:
            values["array_id"] = session.scalar(
                select(JobRow.id).where(JobRow.uid == spec.array_task.uid, JobRow.array_count.is_not(None))
            )
        if values["array_id"] is None:
            raise InvalidSpec("array_task: set by the server for a task of an array; leave it out")
    return _Submission(spec, public, values, cluster, workspace_id, experiment_id, experiment_name)


def check_job(db: Database, names: NameCache, *, workspace: str, request: JobCreate, **options: Any) -> Job:
    """A dry run of :func:`create_job` (same arguments): the job as it would be queued; nothing is stored."""
    sub = _check_submission(db, names, workspace=workspace, request=request, **options)
    if sub.experiment_id is not None and _name_taken(db, sub.experiment_id, sub.values["name"]):
        raise AlreadyExists(f"job {sub.values['name']!r} already exists in experiment {sub.experiment!r}")
    return sub.to_job(workspace)


def _name_taken(db: Database, experiment_id: int | None, name: str) -> bool:
    with db.read() as session:
        found = session.scalar(select(JobRow.id).where(JobRow.experiment_id == experiment_id, JobRow.name == name))
    return found is not None


def create_job(
    db: Database, names: NameCache, *, workspace: str, request: JobCreate, **options: Any
) -> tuple[Job, QueuedJob | None]:
    """Check the request (:func:`_check_submission`: ``submitted_by``, ``settings`` (where job directories go,
    the code archives, ``max_env_bytes``), ``run_as``), resolve names (cached), then hold the write lock for two
    inserts only.

    Returns the job and what the queue's policy needs of it (for the control loop; None for an array).

    Submission is the API's hot path, and SQLite has one writer at a time.
    """
    sub = _check_submission(db, names, workspace=workspace, request=request, **options)
    return _store(db, names, workspace, [sub])[0]


def create_jobs(
    db: Database, names: NameCache, *, workspace: str, requests: Sequence[JobCreate], **options: Any
) -> list[tuple[Job, QueuedJob | None]]:
    """Many submissions in one transaction, as :func:`create_job` each: all are stored, or none. The first one
    refused says which (``jobs[3]: …``) and why."""
    subs: list[_Submission] = []
    seen: dict[tuple[str, str], int] = {}
    for index, request in enumerate(requests):
        try:
            sub = _check_submission(db, names, workspace=workspace, request=request, **options)
        except CorralError as exc:
            exc.message = f"jobs[{index}]: {exc.message}"
            exc.details = [{**d, "loc": f"jobs.{index}.{d.get('loc', '')}".rstrip(".")} for d in exc.details]
            raise
        key = (sub.experiment, sub.values["name"])
        if key in seen:
            raise InvalidRequest(f"jobs[{index}]: job {key[1]!r} is in this batch twice (also jobs[{seen[key]}])")
        seen[key] = index
        subs.append(sub)
    return _store(db, names, workspace, subs)


def _store(
    db: Database, names: NameCache, workspace: str, subs: list[_Submission]
) -> list[tuple[Job, QueuedJob | None]]:
    """The checked submissions, inserted in one transaction (two inserts each); their jobs, and what the queue
    needs of each (None for an array)."""
    try:
        with db.write() as session:
            made: dict[str, int] = {}  # experiments made by this transaction
            job_ids = []
            for sub in subs:
                experiment_id = sub.experiment_id or made.get(sub.experiment)
                if experiment_id is None:
                    experiment_id = made[sub.experiment] = experiments.get_or_create(
                        session, sub.workspace_id, sub.experiment
                    ).id
                sub.values["experiment_id"] = experiment_id
                job_ids.append(session.execute(insert(JobRow).values(**sub.values).returning(JobRow.id)).scalar_one())
                record_created(session, job_id=job_ids[-1], at=sub.values["created_at"])
    except IntegrityError:
        # Usually the (experiment, name) unique constraint: cheaper than looking first on every submission.
        names.invalidate()
        for sub in subs:
            name = sub.values["name"]
            if _name_taken(db, sub.values.get("experiment_id", sub.experiment_id), name):
                raise AlreadyExists(f"job {name!r} already exists in experiment {sub.experiment!r}") from None
        raise Conflict(
            f"a cluster or experiment of {'these jobs' if len(subs) > 1 else 'the job'} changed while "
            f"{'they were' if len(subs) > 1 else 'it was'} submitted; submit again"
        ) from None
    return [(sub.to_job(workspace), _queued(sub, job_id)) for sub, job_id in zip(subs, job_ids, strict=True)]


def _queued(sub: _Submission, job_id: int) -> QueuedJob | None:
    """What the queue's policy needs of a stored job (None for an array: the array driver makes its tasks)."""
    if sub.spec.array is not None:
        return None
    return queued_job(
        job_id=job_id,
        cluster_id=sub.cluster.id,
        priority=sub.values["priority"],
        node_count=sub.spec.node_count,
        user=sub.values["submitted_by"],
        workspace_id=sub.workspace_id,
        wall_clock=sub.spec.limits.max_wall_clock,
        gpus_per_node=sub.cluster.gpus_per_node,
        queued_since=sub.values["created_at"],
    )


def list_jobs(
    session: Session,
    *,
    workspace: str,
    experiment: str | None,
    state: JobState | None = None,
    name: str | None = None,
    prefix: str | None = None,
    after: int | None = None,
    limit: int = 1000,
) -> tuple[list[Job], str | None]:
    """Jobs of one experiment, or of every experiment of the workspace (``experiment=None``), oldest first,
    each with its attempts (as ``show`` gives them); and the cursor of the next page (None on the last)."""
    ws = workspace_row(session, workspace)
    query = select(JobRow, ExperimentRow.name).join(ExperimentRow, ExperimentRow.id == JobRow.experiment_id)
    if experiment is not None:
        query = query.where(JobRow.experiment_id == experiment_row(session, ws, experiment).id)
    else:
        query = query.where(JobRow.workspace_id == ws.id)
    if state is not None:
        query = query.where(JobRow.state == state.value)
    if name is not None:
        query = query.where(JobRow.name == name)
    if prefix:
        query = query.where(JobRow.name.startswith(prefix, autoescape=True))
    if name is None and not prefix:  # an array is one row: its tasks are listed by name or prefix (NAME.)
        query = query.where(JobRow.array_id.is_(None))
    if after is not None:
        query = query.where(JobRow.id > after)
    rows = session.execute(query.order_by(JobRow.id).limit(limit + 1)).all()
    next_cursor = str(rows[limit - 1][0].id) if len(rows) > limit else None
    rows = rows[:limit]
    attempts: dict[int, list[AttemptRow]] = {}
    ids = [row.id for row, _ in rows]
    for start in range(0, len(ids), 1000):  # bounded IN lists
        chunk = ids[start : start + 1000]
        for attempt in session.scalars(
            select(AttemptRow).where(AttemptRow.job_id.in_(chunk)).order_by(AttemptRow.job_id, AttemptRow.number)
        ):
            attempts.setdefault(attempt.job_id, []).append(attempt)
    jobs = [
        to_model(row, workspace=workspace, experiment=exp_name, attempts=attempts.get(row.id, []))
        for row, exp_name in rows
    ]
    for job, (row, _) in zip(jobs, rows, strict=True):
        if row.array_count is not None:
            job.array = arrays.array_status(session, row)
    return jobs, next_cursor


def get_job(session: Session, *, workspace: str, experiment: str, name: str) -> Job:
    return load_job(session, workspace=workspace, experiment=experiment, name=name)[0]


def load_job(session: Session, *, workspace: str, experiment: str, name: str) -> tuple[Job, int]:
    """The job and its row id (for waiting on it)."""
    row, _ = job_row(session, workspace, experiment, name)
    attempts = list(session.scalars(select(AttemptRow).where(AttemptRow.job_id == row.id).order_by(AttemptRow.number)))
    job = to_model(row, workspace=workspace, experiment=experiment, attempts=attempts)
    if attempts:
        job.rank_nodes = rank_nodes_of(session, row, list(attempts[-1].node_names))
        if row.state == JobState.RUNNING:
            job.step = "uploading" if _uploading(row) else outputs.running_step(row, attempts[-1])
    if row.array_count is not None:
        job.array = arrays.array_status(session, row)
    return job, row.id


def rank_nodes_of(session: Session, row: JobRow, nodes: list[str]) -> list[str | None]:
    """The node each rank of the job runs on, given its attempt's nodes (None where it cannot be known)."""
    spec = stored_job_spec(row)
    if spec is None or len(nodes) != spec.node_count:
        return [None] * row.rank_count
    cluster = session.get(ClusterRow, row.cluster_id) if row.cluster_id is not None else None
    # The raw read: showing a job must work even where its cluster's stored spec no longer loads.
    return rank_nodes(spec, nodes, gpus_per_node=node_gpus(cluster.spec) if cluster is not None else 0)


def terminate_job(
    session: Session,
    *,
    workspace: str,
    experiment: str,
    name: str,
    access: Access,
    why: tuple[ErrorCode, str] | None = None,
) -> tuple[Job, int, str]:
    """Returns the job, its id and what the caller must do next: ``"signal"``, ``"ended"`` or ``"none"``.
    ``why``: the error code and message it ends with, when not the user's request (``Pruned`` by its sweep)."""
    row, _ = job_row(session, workspace, experiment, name)
    access.check_job_change(submitted_by=row.submitted_by, job=name)
    state = JobState(row.state)
    if state.is_terminal:
        raise Conflict(f"job {name!r} already {state.value}")
    now = time.time()
    action = "none"
    code, message = why or (ErrorCode.TERMINATED, "terminated before it started")
    if state == JobState.QUEUED:
        if transition_job(
            session,
            row,
            JobState.TERMINATED,
            reason=code,
            message=message,
            at=now,
            ended_at=now,
            error_code=code,
            error_message=message,
        ):
            action = "ended"
        state = JobState(row.state)  # the scheduler may have started it meanwhile
    if state == JobState.RUNNING and transition_job(
        session, row, JobState.TERMINATING, reason=code if why else "TerminateRequested",
        message=message if why else None, at=now, terminate_requested_at=now,
    ):  # fmt: skip
        action = "signal"
        if why:  # its own reason rides on the row to the attempt's end (``finish_runs``), across restarts too
            session.execute(update(JobRow).where(JobRow.id == row.id).values(reason=code, terminate_message=message))
    return get_job(session, workspace=workspace, experiment=experiment, name=name), row.id, action


def delete_job(
    session: Session, *, workspace: str, experiment: str, name: str, access: Access
) -> list[tuple[str, str]]:
    """Delete a finished job (an array with its tasks); returns (job dir, uid) of each for
    :func:`remove_job_files` after commit."""
    row, _ = job_row(session, workspace, experiment, name)
    access.check_job_change(submitted_by=row.submitted_by, job=name)
    if not JobState(row.state).is_terminal:
        raise Conflict(f"job {name!r} is {row.state}; terminate it before deleting it")
    found = [(row.job_dir, row.uid)]
    if row.array_count is not None:  # its tasks go with it (the foreign key's cascade): their files too
        found += [
            (d, u) for d, u in session.execute(select(JobRow.job_dir, JobRow.uid).where(JobRow.array_id == row.id))
        ]
    session.delete(row)
    return found


def list_events(session: Session, *, workspace: str, experiment: str, name: str) -> list[JobEvent]:
    row, _ = job_row(session, workspace, experiment, name)
    events = session.scalars(select(JobEventRow).where(JobEventRow.job_id == row.id).order_by(JobEventRow.id))
    return [
        JobEvent(
            at=datetime.fromtimestamp(e.at, UTC),
            from_state=e.from_state,
            to_state=e.to_state,
            reason=e.reason,
            message=e.message,
        )
        for e in events
    ]


def remove_job_files(nodes: NodeProvider, jobs: list[tuple[str, str]]) -> None:
    """Remove deleted jobs' files: the job dir, and what every node kept of the job (its temp dirs)."""
    for job_dir, uid in jobs:
        shutil.rmtree(job_dir, ignore_errors=True)
        nodes.remove_job_files(uid)
