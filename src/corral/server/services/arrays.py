"""A job array as stored: its row at submission (one row, its items resolved), its tasks' names and specs, and
its tasks' states. ``server/array_driver.py`` makes the tasks (``commands.make_array_task``), in order; a
terminate of one index makes it out of order, to end it."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from corral.core.errors import InvalidSpec
from corral.core.models import ArrayStatus
from corral.core.specs import MAX_ARRAY_TASKS, JobSpec
from corral.core.states import JobState
from corral.store.tables import JobRow


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


#: An array's name leaves room for its tasks' (``<array>.<index>``).
MAX_ARRAY_NAME = 56


def array_values(spec: JobSpec, values: dict[str, Any], now: float) -> None:
    """An array's row: never queued (its tasks are, by the array driver), running from its submission, with its
    items resolved (a folder's files listed now, ``per_task`` a task) in its stored spec."""
    array = spec.array
    assert array is not None
    if len(values["name"]) > MAX_ARRAY_NAME:
        raise InvalidSpec(f"name: an array's name has at most {MAX_ARRAY_NAME} characters (its tasks add .<index>)")
    items = array.items
    if array.items_from is not None:
        items = list_items(array.items_from.path, array.items_from.glob, array.items_from.per_task)
    count = len(items) if items is not None else array.count
    assert count is not None
    stored = dict(values["spec"])
    stored["array"] = {**stored["array"], "items_from": None, "items": items, "count": None if items else count}
    values.update(spec=stored, state=JobState.RUNNING.value, started_at=now, queued_at=None, array_count=count)


def list_items(path: str, pattern: str, per_task: int) -> list[Any]:
    folder = PurePosixPath(path)
    if not folder.is_absolute():
        raise InvalidSpec(f"array.items_from.path: an absolute path (the client makes it so), got {path!r}")
    found = sorted(str(p) for p in Path(folder).glob(pattern) if p.is_file()) if Path(folder).is_dir() else None
    if found is None:
        raise InvalidSpec(f"array.items_from.path: {path} is not a folder on the server's machine")
    if not found:
        raise InvalidSpec(f"array.items_from: no file in {path} matches {pattern!r}")
    tasks = [found[i : i + per_task] for i in range(0, len(found), per_task)]  # a task's files
    if len(tasks) > MAX_ARRAY_TASKS:
        raise InvalidSpec(f"array.items_from: {len(tasks)} tasks, more than {MAX_ARRAY_TASKS}; raise per_task")
    return tasks


def array_status(session: Session, row: JobRow) -> ArrayStatus:
    counts = dict(
        session.execute(
            select(JobRow.state, func.count()).where(JobRow.array_id == row.id).group_by(JobRow.state)
        ).all()
    )
    failed = session.scalars(
        select(JobRow.array_index)
        .where(JobRow.array_id == row.id, JobRow.state.in_([JobState.FAILED, JobState.TERMINATED]))
        .order_by(JobRow.array_index)
        .limit(1000)
    )
    assert row.array_count is not None
    return ArrayStatus(count=row.array_count, counts=counts, failed_indexes=[i for i in failed if i is not None])
