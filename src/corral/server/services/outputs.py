"""A job's files: its outputs, its logs (``stdouterr``), read safely and with secrets masked.

Output ids are the spec's ``outputs[].id`` plus ``stdouterr`` (the job's logs),
as in Batch AI.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy.orm import Session

from corral.core.errors import InvalidRequest
from corral.core.models import FileEntry, FilePage
from corral.launch.env import output_dir
from corral.launch.plan import JobContext
from corral.server.services.lookup import job_row, stored_job_spec
from corral.storage.files import file_to_read, list_directory
from corral.store.tables import JobRow

STDOUTERR = "stdouterr"
LogStream = Literal["stdout", "stderr", "prepare"]


def output_roots(row: JobRow, workspace: str, experiment: str) -> dict[str, Path]:
    roots = {STDOUTERR: Path(row.job_dir) / STDOUTERR}
    spec = stored_job_spec(row)
    if spec is None:  # a spec that no longer loads: its logs only
        return roots
    ctx = JobContext(workspace, experiment, row.name, row.uid, 0, row.job_dir, spec)
    for item in spec.outputs:
        root = Path(os.path.normpath(output_dir(ctx, item.path, item.suffix or item.id)))
        # The spec refuses '..' in a suffix; an output stored before it did, leading out of the job's own
        # directory under its path, is not served at all.
        if root.is_relative_to(os.path.normpath(output_dir(ctx, item.path, ""))):
            roots[item.id] = root
    return roots


def _root(session: Session, workspace: str, experiment: str, job: str, output: str) -> Path:
    row, _ = job_row(session, workspace, experiment, job)
    roots = output_roots(row, workspace, experiment)
    if output not in roots:
        raise InvalidRequest(f"output: job {job!r} has no output {output!r}; it has {', '.join(sorted(roots))}")
    return roots[output]


def list_files(
    session: Session,
    *,
    workspace: str,
    experiment: str,
    job: str,
    output: str | None,
    path: str,
    cursor: str | None,
    limit: int,
) -> FilePage:
    if output is None:
        row, _ = job_row(session, workspace, experiment, job)
        roots = output_roots(row, workspace, experiment)
        entries = [
            FileEntry(name=oid, path=oid, is_dir=True, size=0, modified_at=row_time(row)) for oid in sorted(roots)
        ]
        return FilePage(entries=entries)
    root = _root(session, workspace, experiment, job, output)
    if not root.exists():
        return FilePage(entries=[])
    return list_directory(root, path, cursor=cursor, limit=limit)


def row_time(row: JobRow) -> datetime:
    return datetime.fromtimestamp(row.created_at, UTC)


def file_path(
    session: Session, *, workspace: str, experiment: str, job: str, output: str, path: str
) -> tuple[Path, list[str]]:
    """The file to send, and the secret values to mask in it (only for logs)."""
    target = file_to_read(_root(session, workspace, experiment, job, output), path)
    if output != STDOUTERR:
        return target, []
    row, _ = job_row(session, workspace, experiment, job)
    return target, [v for v in row.secrets.values() if v]


def mask(text: str, secrets: list[str]) -> str:
    for value in secrets:
        text = text.replace(value, "***")
    return text


def log_file(row: JobRow, stream: LogStream, rank: int, attempt: int | None = None) -> Path:
    """``<job dir>/stdouterr/attempt-<n>/<stream>-<rank>.txt``; the latest attempt when none is given."""
    count, what = (row.node_count, "nodes") if stream == "prepare" else (row.rank_count, "ranks")
    if rank < 0 or rank >= count:
        raise InvalidRequest(f"rank: job {row.name!r} has {what} 0..{count - 1}, got {rank}")
    latest = max(1, row.attempt_count)
    if attempt is not None and not 1 <= attempt <= latest:
        raise InvalidRequest(f"attempt: job {row.name!r} has attempts 1..{latest}, got {attempt}")
    return Path(row.job_dir) / STDOUTERR / f"attempt-{attempt or latest}" / f"{stream}-{rank}.txt"


def read_log(
    session: Session,
    *,
    workspace: str,
    experiment: str,
    job: str,
    stream: LogStream,
    rank: int,
    attempt: int | None = None,
) -> str:
    row, _ = job_row(session, workspace, experiment, job)
    path = log_file(row, stream, rank, attempt)
    text = path.read_text(errors="replace") if path.exists() else ""
    return mask(text, [v for v in row.secrets.values() if v])
