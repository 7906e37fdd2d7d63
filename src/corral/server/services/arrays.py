"""A job array's tasks: their names and specs, and making one (``server/array_driver.py`` makes them in order;
a terminate of one index makes it out of order, to end it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.core.models import JobCreate
from corral.server.services import jobs
from corral.store.tables import JobRow

if TYPE_CHECKING:
    from corral.server.context import ServerContext


def task_name(array: str, index: int) -> str:
    return f"{array}.{index}"


def task_spec(array_spec: dict[str, Any], *, index: int, name: str, uid: str) -> dict[str, Any]:
    """A task's job spec: the array's, its ``array`` swapped for its ``array_task`` (index, items), and with
    ``retry_per_index``, retried on any failure that many times."""
    spec = {k: v for k, v in array_spec.items() if k not in ("array", "name")}
    array = array_spec["array"]
    items = array.get("items")
    count = len(items) if items else array["count"]
    mine = (items[index] if isinstance(items[index], list) else [items[index]]) if items else []
    spec["array_task"] = {"index": index, "count": count, "job": name, "uid": uid, "items": mine}
    if array.get("retry_per_index"):
        retry = dict(spec.get("retry") or {})
        on = list(retry.get("on") or ["node_failure", "preemption"])
        retry.update(max_attempts=array["retry_per_index"] + 1, on=[*on, "failure"] if "failure" not in on else on)
        spec["retry"] = retry
    return spec


def make_task(ctx: ServerContext, row: JobRow, workspace: str, experiment: str, index: int) -> None:
    """Queue task ``index`` of the array ``row`` (AlreadyExists when it was made)."""
    spec = task_spec(row.spec, index=index, name=row.name, uid=row.uid)
    request = JobCreate(
        spec=spec, name=task_name(row.name, index), experiment=experiment, code_archive=row.code_archive
    )
    _, queued = jobs.create_job(ctx.db, ctx.names, workspace=workspace, request=request, submitted_by=row.submitted_by,
                                settings=ctx.settings, run_as=row.run_as)  # fmt: skip
    if queued is not None:
        ctx.controller.job_submitted(queued)
