"""Submission: what a job is checked for before it is queued, and how checked jobs are stored.

A submission is checked where it arrives (:func:`check`: the spec, its paths and sizes, the code archive, the
cluster and whether the job could ever fit it), so that a job that enters the queue can run. It is then stored
by :class:`GroupCommit`: one thread that writes every submission waiting, from every request and driver, in one
transaction (two ``executemany`` inserts), and answers each once it is committed. SQLite has one writer at a
time: a commit per job, each waited for on the event loop, made the API wait for the write lock instead of
reading the next request. A job is durable before its submitter hears back, as before.

Each request stays all or none: when a group fails (a name taken), each of its requests is stored again alone,
and only the one at fault is refused.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from corral.core.errors import AlreadyExists, Conflict, CorralError, InvalidRequest, InvalidSpec, NotFound
from corral.core.models import SECRET_MASK, ArrayStatus, Job, JobCreate
from corral.core.spec_parsing import parse_spec
from corral.core.specs import PRIORITY_RANK, JobSpec
from corral.core.states import JobState
from corral.data.volumes import VolumeNotFound, check_locations
from corral.launch.layout import JobLayout
from corral.launch.planner import rank_count
from corral.scheduler.policy import QueuedJob
from corral.scheduler.runs import queued_job
from corral.server.services import arrays, code, experiments
from corral.server.services.lookup import ClusterRef, NameCache
from corral.server.settings import Settings
from corral.store.db import Database
from corral.store.tables import JobRow, table
from corral.store.transitions import record_created

log = logging.getLogger(__name__)

#: A stored job, and what the queue's policy needs of it (None for an array: its driver makes its tasks).
Stored = tuple[Job, QueuedJob | None]
#: The most jobs one group commit stores (a batch request larger than this is stored alone).
GROUP_JOBS = 1000
#: The Core insert, built once: the ORM's bulk insert costs more per job than the insert itself.
_JOBS = table(JobRow)
_INSERT_JOBS = insert(_JOBS).returning(_JOBS.c.id, sort_by_parameter_order=True)


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
class Submission:
    """A job request checked and resolved, with the row to insert."""

    spec: JobSpec
    public: JobSpec
    values: dict[str, Any]
    cluster: ClusterRef
    workspace_id: int
    experiment_id: int | None
    experiment: str
    workspace: str

    def to_job(self) -> Job:
        v = self.values
        return Job(
            name=v["name"],
            uid=v["uid"],
            workspace=self.workspace,
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


def check(
    db: Database,
    names: NameCache,
    *,
    workspace: str,
    request: JobCreate,
    submitted_by: str,
    settings: Settings,
    run_as: str | None = None,
) -> Submission:
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
    return Submission(spec, public, values, cluster, workspace_id, experiment_id, experiment_name, workspace)


def check_job(db: Database, names: NameCache, *, workspace: str, request: JobCreate, **options: Any) -> Job:
    """A dry run of a submission (:func:`check`'s arguments): the job as it would be queued; nothing is stored."""
    sub = check(db, names, workspace=workspace, request=request, **options)
    if sub.experiment_id is not None and _name_taken(db, sub.experiment_id, sub.values["name"]):
        raise AlreadyExists(f"job {sub.values['name']!r} already exists in experiment {sub.experiment!r}")
    return sub.to_job()


def _name_taken(db: Database, experiment_id: int | None, name: str) -> bool:
    with db.read() as session:
        found = session.scalar(select(JobRow.id).where(JobRow.experiment_id == experiment_id, JobRow.name == name))
    return found is not None


def check_batch(
    db: Database, names: NameCache, *, workspace: str, requests: Sequence[JobCreate], **options: Any
) -> list[Submission]:
    """Many submissions, each as :func:`check`; the first one refused says which (``jobs[3]: …``) and why, and
    a name given twice is refused."""
    subs: list[Submission] = []
    seen: dict[tuple[str, str], int] = {}
    for index, request in enumerate(requests):
        try:
            sub = check(db, names, workspace=workspace, request=request, **options)
        except CorralError as exc:
            exc.message = f"jobs[{index}]: {exc.message}"
            exc.details = [{**d, "loc": f"jobs.{index}.{d.get('loc', '')}".rstrip(".")} for d in exc.details]
            raise
        key = (sub.experiment, sub.values["name"])
        if key in seen:
            raise InvalidRequest(f"jobs[{index}]: job {key[1]!r} is in this batch twice (also jobs[{seen[key]}])")
        seen[key] = index
        subs.append(sub)
    return subs


def store(db: Database, names: NameCache, subs: list[Submission]) -> list[Stored]:
    """The checked submissions, inserted in one transaction, all or none: AlreadyExists when a name is taken."""
    try:
        with db.write() as session:
            made: dict[tuple[int, str], int] = {}  # experiments made by this transaction
            for sub in subs:
                experiment_id = sub.experiment_id or made.get((sub.workspace_id, sub.experiment))
                if experiment_id is None:
                    experiment_id = made[(sub.workspace_id, sub.experiment)] = experiments.get_or_create(
                        session, sub.workspace_id, sub.experiment
                    ).id
                sub.values["experiment_id"] = experiment_id
            # One insert per set of columns (an array's rows have more), in the submissions' order.
            job_ids: dict[int, int] = {}
            by_columns: dict[frozenset[str], list[int]] = {}
            for i, sub in enumerate(subs):
                by_columns.setdefault(frozenset(sub.values), []).append(i)
            for group in by_columns.values():
                ids = session.execute(_INSERT_JOBS, [subs[i].values for i in group]).scalars().all()
                job_ids.update(zip(group, ids, strict=True))
            record_created(session, [(job_ids[i], sub.values["created_at"]) for i, sub in enumerate(subs)])
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
    return [(sub.to_job(), _queued(sub, job_ids[i])) for i, sub in enumerate(subs)]


def _queued(sub: Submission, job_id: int) -> QueuedJob | None:
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


class GroupCommit:
    """Stores submissions in one thread: each waiting moment's submissions, from every caller, in one
    transaction (up to :data:`GROUP_JOBS` jobs). :meth:`submit` gives a future of the stored jobs, set once
    committed, after ``on_stored`` was called with them (the control loop hears of a job before its submitter
    does)."""

    def __init__(self, db: Database, names: NameCache, on_stored: Callable[[list[Stored]], None]) -> None:
        self._db = db
        self._names = names
        self._on_stored = on_stored
        self._pending: deque[tuple[list[Submission], Future[list[Stored]]]] = deque()
        self._ready = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="corral-submitter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Store what is waiting, then end the thread (later submissions are stored by their callers)."""
        with self._ready:
            self._stopped = True
            self._ready.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def submit(self, subs: list[Submission]) -> Future[list[Stored]]:
        """Store the checked submissions, all or none; the future's result, or the error that refused them."""
        future: Future[list[Stored]] = Future()
        with self._ready:
            if not self._stopped and self._thread.is_alive():
                self._pending.append((subs, future))
                self._ready.notify()
                return future
        self._commit([(subs, future)])  # not started, or stopping: stored here
        return future

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._pending and not self._stopped:
                    self._ready.wait()
                if not self._pending:
                    return
                group = [self._pending.popleft()]
                jobs = len(group[0][0])
                while self._pending and jobs + len(self._pending[0][0]) <= GROUP_JOBS:
                    jobs += len(self._pending[0][0])
                    group.append(self._pending.popleft())
            self._commit(group)

    def _commit(self, group: list[tuple[list[Submission], Future[list[Stored]]]]) -> None:
        try:
            stored = store(self._db, self._names, [sub for subs, _ in group for sub in subs])
        except Exception as exc:
            if len(group) > 1:  # each request again alone: only the one at fault is refused
                for one in group:
                    self._commit([one])
            else:
                group[0][1].set_exception(exc)
            return
        try:
            self._on_stored(stored)
        except Exception:  # the jobs are committed: the loop finds them at its next reload all the same
            log.exception("could not hand stored jobs to the control loop")
        start = 0
        for subs, future in group:
            future.set_result(stored[start : start + len(subs)])
            start += len(subs)
