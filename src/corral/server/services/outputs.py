"""A job's files: its outputs, its logs (``stdouterr``), read safely and with secrets masked; and where a running
job is, read from its attempt's records (``running_step``).

Output ids are the spec's ``outputs[].id`` plus ``stdouterr`` (the job's logs),
as in Batch AI.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session

from corral.core.errors import InvalidRequest, NotFound
from corral.core.models import FileEntry, FilePage
from corral.core.specs import JobSpec, mount_macro, store_location
from corral.data.stores import Store, store_for
from corral.data.volumes import resolve, volume_rows
from corral.launch.env import output_base, output_dir
from corral.launch.layout import ENVIRONMENT_DONE, STARTED_MARKER, STDOUTERR, JobLayout
from corral.launch.plan import JobContext
from corral.server.services.lookup import job_row, stored_job_spec
from corral.server.services.volumes import list_in
from corral.storage.files import file_to_read, list_directory
from corral.store.tables import AttemptRow, ClusterRow, JobRow

LogStream = Literal["stdout", "stderr", "prepare", "mpirun", "upload", "environment"]


def output_roots(session: Session, row: JobRow, workspace: str, experiment: str) -> dict[str, Path]:
    roots = {STDOUTERR: Path(JobLayout(row.job_dir).logs_root)}
    spec = stored_job_spec(row)
    if spec is None:  # a spec that no longer loads: its logs only
        return roots
    ctx = JobContext(workspace, experiment, row.name, row.uid, 0, row.job_dir, spec)
    for item in spec.outputs:
        if store_location(item.path) is not None:
            continue  # on a volume: store_output
        path = item.path
        if path.startswith("$"):  # under a mount root: served where that is a mounted shared directory
            found = mounted_directory(session, row, spec, path)
            if found is None:
                continue  # on the nodes' own disks: not served
            path = found
        root = Path(os.path.normpath(output_dir(ctx, path, item.suffix or item.id)))
        # The spec refuses '..' in a suffix; an output stored before it did, leading out of the job's own
        # directory under its path, is not served at all.
        if root.is_relative_to(os.path.normpath(output_base(ctx, path))):
            roots[item.id] = root
    return roots


def mounted_directory(session: Session, row: JobRow, spec: JobSpec, path: str) -> str | None:
    """The directory on the server that ``$CORRAL_MOUNT_ROOT/...`` (or the job's mount root) is, where it lies in
    a mount of a ``path`` volume (the cluster's or the job's); None otherwise."""
    macro = mount_macro(path)
    if macro is None:
        return None
    root, rest = macro
    mounts = spec.mounts
    if root == "mount_root":
        cluster = session.get(ClusterRow, row.cluster_id) if row.cluster_id is not None else None
        mounts = cluster.parsed.mounts if cluster is not None else []
    volumes = {v.name: v for v in volume_rows(session, [row.workspace_id]).get(row.workspace_id, [])}
    for mount in mounts:
        volume = volumes.get(mount.volume)
        if volume is None or volume.kind != "path" or not (rest == mount.path or rest.startswith(mount.path + "/")):
            continue
        return posixpath.join(volume.spec["path"], rest[len(mount.path) :].lstrip("/"))
    return None


def store_output(session: Session, row: JobRow, workspace: str, experiment: str, output: str) -> StoreOutput | None:
    """Where a job's output on a volume went (a store whose root is the job's folder of it), and the volume's
    credentials to mask; None for an output that is a path (or no output of that id)."""
    spec = stored_job_spec(row)
    item = next((o for o in spec.outputs if o.id == output), None) if spec is not None else None
    if spec is None or item is None or store_location(item.path) is None:
        return None
    try:
        volume, relative = resolve(item.path, volume_rows(session, [row.workspace_id]).get(row.workspace_id, []))
    except LookupError as exc:
        raise NotFound(f"output {output!r} of job {row.name!r}: {exc}") from None
    ctx = JobContext(workspace, experiment, row.name, row.uid, 0, row.job_dir, spec)
    store = store_for(volume.spec, volume.credentials or {})
    root = output_dir(ctx, store.path(relative), item.suffix or item.id)
    return replace(store, root=root), dict(volume.credentials or {})


StoreOutput = tuple[Store, dict[str, Any]]


def _root(session: Session, workspace: str, experiment: str, job: str, output: str) -> Path:
    row, _ = job_row(session, workspace, experiment, job)
    roots = output_roots(session, row, workspace, experiment)
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
    row, _ = job_row(session, workspace, experiment, job)
    if output is None:
        ids = set(output_roots(session, row, workspace, experiment))
        spec = stored_job_spec(row)
        ids.update(o.id for o in (spec.outputs if spec is not None else []) if store_location(o.path) is not None)
        entries = [FileEntry(name=oid, path=oid, is_dir=True, size=0, modified_at=row_time(row)) for oid in sorted(ids)]
        return FilePage(entries=entries)
    on_volume = store_output(session, row, workspace, experiment, output)
    if on_volume is not None:
        store, secrets = on_volume
        try:
            return list_in(store, secrets, path, cursor=cursor, limit=limit)
        except NotFound:
            if path.strip("/"):
                raise
            return FilePage(entries=[])  # nothing uploaded (yet)
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
    """A rank's (a node's, for ``prepare``; the launcher's, for ``mpirun``) log of an attempt, the latest when
    none is given."""
    per_node = stream in ("prepare", "upload", "environment")
    count, what = (row.node_count, "nodes") if per_node else (row.rank_count, "ranks")
    if stream != "mpirun" and (rank < 0 or rank >= count):
        raise InvalidRequest(f"rank: job {row.name!r} has {what} 0..{count - 1}, got {rank}")
    latest = max(1, row.attempt_count)
    if attempt is not None and not 1 <= attempt <= latest:
        raise InvalidRequest(f"attempt: job {row.name!r} has attempts 1..{latest}, got {attempt}")
    return Path(JobLayout(row.job_dir).log(attempt or latest, stream, rank))


#: Bytes read from a log at a time; a line longer than this is masked and sent in pieces.
CHUNK_BYTES = 1 << 20


def log_path(
    session: Session,
    *,
    workspace: str,
    experiment: str,
    job: str,
    stream: LogStream,
    rank: int,
    attempt: int | None = None,
) -> tuple[Path, list[str]]:
    """The log file of one rank (it may not exist yet) and the secret values to mask in it."""
    row, _ = job_row(session, workspace, experiment, job)
    return log_file(row, stream, rank, attempt), [v for v in row.secrets.values() if v]


def log_range(path: Path, *, offset: int = 0, tail: int | None = None) -> tuple[int, int]:
    """The bytes ``[start, end)`` of a log to send: from ``offset`` (or the start of its last ``tail`` lines) to
    its size now. ``end`` is where a client reading on continues (``offset=end``)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0, 0
    start = min(offset, size)
    if tail is not None:
        start = max(start, _start_of_last_lines(path, size, tail))
    return start, size


def _start_of_last_lines(path: Path, size: int, lines: int) -> int:
    """The offset of the first of the last ``lines`` lines, read backwards a block at a time."""
    if lines == 0:
        return size
    with path.open("rb") as f:
        end = size
        if end and (f.seek(end - 1), f.read(1))[1] == b"\n":
            end -= 1  # the final newline ends the last line; it does not start another
        seen, position = 0, end
        while position > 0:
            step = min(CHUNK_BYTES, position)
            position -= step
            f.seek(position)
            block = f.read(step)
            at = len(block)
            while True:
                at = block.rfind(b"\n", 0, at)
                if at < 0:
                    break
                seen += 1
                if seen == lines:
                    return position + at + 1
    return 0


def read_masked(path: Path, secrets: list[str], *, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """The bytes ``[start, end)`` of a file, a chunk at a time, each secret value shown as ``***``.

    Chunks are cut after a newline, so a secret within one line is always masked; memory stays bounded by
    :data:`CHUNK_BYTES` whatever the file's size.
    """
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    with f:
        f.seek(start)
        left = (end - start) if end is not None else None
        carry = b""
        while left is None or left > 0:
            block = f.read(CHUNK_BYTES if left is None else min(CHUNK_BYTES, left))
            if not block:
                break
            if left is not None:
                left -= len(block)
            data = carry + block
            cut = data.rfind(b"\n") + 1
            if cut == 0 and len(data) < CHUNK_BYTES:
                carry = data  # no newline yet: keep it to mask whole lines
                continue
            cut = cut or len(data)
            carry = data[cut:]
            yield _mask_bytes(data[:cut], secrets)
        if carry:
            yield _mask_bytes(carry, secrets)


def _mask_bytes(data: bytes, secrets: list[str]) -> bytes:
    if not secrets:
        return data
    return mask(data.decode(errors="replace"), secrets).encode()


def running_step(row: JobRow, attempt: AttemptRow) -> str:
    """Where a running job's attempt is (before any upload of its outputs), read from its records: the started
    marker once every node's prepare is done, else the environment logs (a node's log exists from the step's
    start and ends with a ``corral: environment`` line when it is done), else the prepare logs."""
    layout = JobLayout(row.job_dir)
    if Path(layout.attempt_dir(attempt.number), STARTED_MARKER).exists():
        return "running"
    nodes = range(len(attempt.node_names))
    for rank in nodes:
        log = Path(layout.log(attempt.number, "environment", rank))
        if log.exists() and not any(line.startswith(ENVIRONMENT_DONE) for line in log.read_text().splitlines()):
            return "environment"
    # A job without a prepare has no prepare log and no started marker: its processes start at once.
    preparing = any(Path(layout.log(attempt.number, "prepare", rank)).exists() for rank in nodes)
    return "preparing" if preparing else "running"
