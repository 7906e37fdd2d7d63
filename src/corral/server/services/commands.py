"""What the API asks that changes something, each with everything that follows from it.

A command runs its transaction through the services, then, once committed, its side effects: the name cache
forgets what changed, the control loop hears of it (a submitted job, a changed cluster or quota, a terminate,
a node to preempt), the backend removes files nobody owns any more. Routers parse, authorise and call one
function here (or one read in the services); none of them reaches the loop, the cache or the backend itself.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future
from typing import Any, Literal

from corral.core.errors import AlreadyExists, Conflict, InvalidRequest, NotFound
from corral.core.models import (
    Cluster,
    Job,
    JobCreate,
    Member,
    Node,
    Quota,
    Role,
    Sweep,
    UserCreate,
    UserCreated,
    Workspace,
)  # fmt: skip
from corral.core.states import ErrorCode, JobState
from corral.server.access import Access
from corral.server.auth import HOME_ADMIN, write_token_file
from corral.server.context import ServerContext
from corral.server.services import arrays, clusters, experiments, jobs, submission, sweeps, users, workspaces
from corral.server.services.submission import Stored
from corral.store.tables import JobRow


def run_as(ctx: ServerContext, access: Access) -> str | None:
    """The Unix account the caller's processes run as: theirs where users are isolated, else the server's."""
    return access.principal.unix_user if ctx.backends.accounts is not None and access.principal else None


def _clusters_changed(ctx: ServerContext) -> None:
    ctx.names.invalidate()
    ctx.controller.policy_changed()


# ---------------------------------------------------------------- clusters


def create_cluster(ctx: ServerContext, *, workspace: str, spec: dict[str, Any], access: Access) -> Cluster:
    with ctx.db.write() as session:
        cluster = clusters.create_cluster(
            session, workspace=workspace, spec_data=spec, max_nodes=ctx.settings.max_nodes_per_cluster,
            provider=ctx.backends.nodes, run_as=run_as(ctx, access),
        )  # fmt: skip
    _clusters_changed(ctx)
    return cluster


def resize_cluster(
    ctx: ServerContext,
    *,
    workspace: str,
    name: str,
    nodes: int,
    deallocation: Literal["requeue", "terminate", "wait"] | None,
) -> Cluster:
    with ctx.db.write() as session:
        cluster = clusters.resize_cluster(
            session, workspace=workspace, name=name, nodes=nodes, max_nodes=ctx.settings.max_nodes_per_cluster,
            provider=ctx.backends.nodes, deallocation=deallocation,
        )  # fmt: skip
    _clusters_changed(ctx)
    return cluster


def autoscale_cluster(
    ctx: ServerContext, *, workspace: str, name: str, min_nodes: int, max_nodes: int, idle_timeout: float | None
) -> Cluster:
    with ctx.db.write() as session:
        cluster = clusters.autoscale_cluster(
            session, workspace=workspace, name=name, min_nodes=min_nodes, max_nodes=max_nodes,
            limit=ctx.settings.max_nodes_per_cluster, provider=ctx.backends.nodes, idle_timeout=idle_timeout,
        )  # fmt: skip
    _clusters_changed(ctx)
    return cluster


def delete_cluster(ctx: ServerContext, *, workspace: str, name: str) -> None:
    with ctx.db.write() as session:
        clusters.delete_cluster(session, workspace=workspace, name=name)
    _clusters_changed(ctx)
    ctx.backends.nodes.remove_node_files(workspace, name)


def preempt_node(ctx: ServerContext, *, workspace: str, cluster: str, node: str) -> Node:
    """Evict a node of a low-priority cluster (the loop gives notice, waits the grace, removes it)."""
    with ctx.db.read() as session:
        found = clusters.preemptible_node(session, workspace=workspace, cluster=cluster, node=node)
        shown = next(
            n for n in clusters.list_nodes(session, workspace=workspace, cluster=cluster) if n.name == found.name
        )
    ctx.controller.preempt_node(found.id)
    return shown


def recover_node(ctx: ServerContext, *, workspace: str, cluster: str, node: str) -> Node:
    with ctx.db.write() as session:
        recovered = clusters.recover_node(session, workspace=workspace, cluster=cluster, node=node)
    ctx.controller.policy_changed()
    return recovered


def node_setup_log(ctx: ServerContext, *, workspace: str, cluster: str, node: str) -> str:
    with ctx.db.read() as session:
        return clusters.node_setup_log(session, ctx.backends.access, workspace=workspace, cluster=cluster, node=node)


# ---------------------------------------------------------------- jobs


def check_job(ctx: ServerContext, *, workspace: str, request: JobCreate, access: Access) -> Job:
    """A dry run of :func:`submit_job`: everything a submission checks, nothing stored."""
    return submission.check_job(ctx.db, ctx.names, workspace=workspace, request=request, submitted_by=access.user,
                                settings=ctx.settings, run_as=run_as(ctx, access))  # fmt: skip


def submit_job(ctx: ServerContext, *, workspace: str, request: JobCreate, access: Access) -> Future[list[Stored]]:
    """Queue a job, after the user's limits: checked here, stored by the group commit (the future's result,
    once committed; the loop is handed it by :func:`jobs_stored`)."""
    ctx.admission.admit(ctx.db, user=access.user)
    sub = submission.check(ctx.db, ctx.names, workspace=workspace, request=request, submitted_by=access.user,
                           settings=ctx.settings, run_as=run_as(ctx, access))  # fmt: skip
    return ctx.submissions.submit([sub])


def submit_jobs(
    ctx: ServerContext, *, workspace: str, requests: list[JobCreate], access: Access
) -> Future[list[Stored]]:
    """Queue many jobs in one transaction, all or none, after the user's limits (counted for each job)."""
    ctx.admission.admit(ctx.db, user=access.user, count=len(requests))
    subs = submission.check_batch(
        ctx.db, ctx.names, workspace=workspace, requests=requests, submitted_by=access.user, settings=ctx.settings,
        run_as=run_as(ctx, access),
    )  # fmt: skip
    return ctx.submissions.submit(subs)


def jobs_stored(ctx: ServerContext, made: list[Stored]) -> None:
    """Jobs just committed to the queue: the control loop is handed each (an array's driver makes its tasks)."""
    queued = [job for _, job in made if job is not None]
    if len(queued) < len(made):
        ctx.arrays.wake()
    if queued:
        ctx.controller.jobs_submitted(queued)


def terminate_job(
    ctx: ServerContext,
    *,
    workspace: str,
    experiment: str,
    name: str,
    access: Access,
    why: tuple[ErrorCode, str] | None = None,
) -> Job:
    """``why``: the error the job ends with when not its user's request (``Pruned`` by its sweep). An array's
    tasks are terminated by its driver."""
    with ctx.db.write() as session:
        job, job_id, action = jobs.terminate_job(
            session, workspace=workspace, experiment=experiment, name=name, access=access, why=why
        )
    if action == "signal":
        ctx.controller.request_terminate(job_id)
    elif action == "ended":
        ctx.controller.job_dequeued(job_id)
        ctx.waiters.notify([job_id])
    if job.array is not None:
        ctx.arrays.wake()
    return job


def terminate_index(
    ctx: ServerContext, *, workspace: str, experiment: str, name: str, index: int, access: Access
) -> Job:
    """One task of an array (``corral job terminate NAME[17]``): ended, made first if the array had not yet
    made it (then it never runs)."""
    with ctx.db.read() as session:
        row, _ = jobs.job_row(session, workspace, experiment, name)
    if row.array_count is None:
        raise InvalidRequest(f"index: job {name!r} is not an array")
    if not 0 <= index < row.array_count:
        raise InvalidRequest(f"index: array {name!r} has indexes 0..{row.array_count - 1}, got {index}")
    access.check_job_change(submitted_by=row.submitted_by, job=name)
    if row.state != JobState.RUNNING:
        raise Conflict(f"array {name!r} is {row.state}")
    with contextlib.suppress(AlreadyExists):
        make_array_task(ctx, row, workspace, experiment, index).result()
    return terminate_job(ctx, workspace=workspace, experiment=experiment, name=arrays.task_name(name, index),
                         access=access)  # fmt: skip


def delete_job(ctx: ServerContext, *, workspace: str, experiment: str, name: str, access: Access) -> None:
    with ctx.db.write() as session:
        found = jobs.delete_job(session, workspace=workspace, experiment=experiment, name=name, access=access)
    jobs.remove_job_files(ctx.backends.nodes, found)


# ---------------------------------------------------------------- experiments and workspaces


def delete_experiment(ctx: ServerContext, *, workspace: str, name: str) -> None:
    with ctx.db.write() as session:
        job_dirs = experiments.delete_experiment(session, workspace=workspace, name=name)
    ctx.names.invalidate()
    jobs.remove_job_files(ctx.backends.nodes, job_dirs)


def create_workspace(ctx: ServerContext, *, name: str, owner: str | None) -> Workspace:
    with ctx.db.write() as session:
        created = workspaces.create_workspace(session, name=name, owner=owner)
    ctx.roles.clear()
    return created


def set_member(ctx: ServerContext, *, workspace: str, user: str, role: Role) -> Member:
    with ctx.db.write() as session:
        member = workspaces.set_member(session, workspace=workspace, user=user, role=role)
    ctx.roles.clear()  # the new role holds from the member's next request
    return member


def remove_member(ctx: ServerContext, *, workspace: str, user: str) -> None:
    with ctx.db.write() as session:
        workspaces.remove_member(session, workspace=workspace, user=user)
    ctx.roles.clear()


def set_quota(ctx: ServerContext, *, workspace: str, quota: Quota) -> Workspace:
    with ctx.db.write() as session:
        changed = workspaces.set_quota(session, name=workspace, quota=quota)
    ctx.controller.policy_changed()
    return changed


# ---------------------------------------------------------------- users


def delete_user(ctx: ServerContext, *, name: str, by: str) -> None:
    with ctx.db.write() as session:
        users.delete_user(session, name=name, by=by)
    ctx.principals.clear()  # the deleted user's next request is refused, not served from the cache
    ctx.roles.clear()


def create_user(ctx: ServerContext, *, request: UserCreate, expires_in: float | None) -> UserCreated:
    """A user, with the Unix account their processes run as where users are isolated (made if need be)."""
    unix_user = None
    if ctx.backends.accounts is not None:
        with ctx.db.read() as session:
            users.check_new(session, name=request.name)
        unix_user = ctx.backends.accounts.ensure(request.name, request.unix_user)
    elif request.unix_user is not None:
        raise InvalidRequest(
            "unix_user: this server runs every job as its own user (it does not run as root, or "
            "CORRAL_RUN_AS_USERS=false), so a user's jobs cannot run as another account"
        )
    with ctx.db.write() as session:
        return users.create_user(
            session, name=request.name, admin=request.admin, expires_in=expires_in, unix_user=unix_user
        )


def new_token(ctx: ServerContext, *, name: str, expires_in: float | None = None) -> UserCreated:
    with ctx.db.write() as session:
        created = users.new_token(session, name=name, expires_in=expires_in)
    ctx.principals.clear()  # the old token's next request is refused
    if name == HOME_ADMIN:  # the token the local CLI reads stays the admin's
        write_token_file(ctx.settings.token_file, created.token)
    return created


def revoke_token(ctx: ServerContext, *, name: str) -> None:
    with ctx.db.write() as session:
        users.revoke_token(session, name=name)
    ctx.principals.clear()


# ---------------------------------------------------------------- sweeps


def create_sweep(ctx: ServerContext, *, workspace: str, experiment: str, data: dict[str, Any], access: Access) -> Sweep:
    """A sweep, once its spec and its first trial as a job are checked (a dry run of its submission)."""
    experiment = data.get("experiment") or experiment
    spec, name, first = sweeps.check_sweep(data, experiment)
    check_job(ctx, workspace=workspace, request=first, access=access)
    with ctx.db.write() as session:
        sweep = sweeps.create_sweep(
            session, workspace=workspace, experiment=experiment, name=name, spec=spec, created_by=access.user
        )
    ctx.names.invalidate()
    ctx.sweeps.wake()
    return sweep


def terminate_sweep(ctx: ServerContext, *, workspace: str, experiment: str, name: str, access: Access) -> Sweep:
    """The sweep ends; its trials still running are terminated."""
    with ctx.db.write() as session:
        row = sweeps.sweep_row(session, workspace, experiment, name)
        access.check_job_change(submitted_by=row.created_by, job=f"sweep {name}")
        sweep, running = sweeps.terminate_sweep(session, workspace=workspace, experiment=experiment, name=name)
    for job in running:
        with contextlib.suppress(Conflict, NotFound):  # it ended meanwhile, or a pending trial's job was not made
            terminate_job(ctx, workspace=workspace, experiment=experiment, name=job, access=access)
    ctx.sweeps.wake()
    return sweep


def make_array_task(
    ctx: ServerContext, row: JobRow, workspace: str, experiment: str, index: int
) -> Future[list[Stored]]:
    """Queue task ``index`` of the array ``row``: checked here, stored by the group commit (the future: its error
    is AlreadyExists when the task was made). Tasks asked for one after another, without waiting, are stored in
    one transaction, each still refused alone."""
    spec = arrays.task_spec(row.spec, index=index, name=row.name, uid=row.uid)
    request = JobCreate(
        spec=spec, name=arrays.task_name(row.name, index), experiment=experiment, code_archive=row.code_archive
    )
    sub = submission.check(ctx.db, ctx.names, workspace=workspace, request=request, submitted_by=row.submitted_by,
                           settings=ctx.settings, run_as=row.run_as)  # fmt: skip
    return ctx.submissions.submit([sub])
