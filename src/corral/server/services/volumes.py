"""Volumes: a workspace's buckets, containers and shared directories, and their files.

A volume's credentials are checked at creation (a listing), stored sealed, and never returned: responses carry
the spec without them and ``has_credentials``. Errors from a store are worded here, with any credential masked.
A ``path`` volume lets its members read and write that directory with the server's rights, so only admins make
them; paths in it are resolved on the server's disk and may not lead out of it (``..``, symlinks).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.errors import (
    AlreadyExists,
    CorralError,
    Forbidden,
    InvalidRequest,
    InvalidSpec,
    NotFound,
    StoreError,
)
from corral.core.models import FileEntry, FilePage, Volume
from corral.core.spec_parsing import exc_summary, spec_errors
from corral.core.volume_specs import VOLUME_KINDS, VolumeSpec
from corral.data.stores import Store, check, store_for
from corral.data.volumes import relative_path
from corral.server.access import Access
from corral.server.services.lookup import did_you_mean, workspace_row
from corral.storage.files import file_to_read, list_directory, resolve_inside
from corral.store.db import Database
from corral.store.tables import VolumeRow

_VOLUME = TypeAdapter(VolumeSpec)
#: Bytes per read or write of a file's content.
CHUNK = 1024 * 1024


def parse_volume(data: Any) -> Any:
    """The spec of a volume (``S3Volume``, ``AzureBlobVolume`` or ``PathVolume``); ``InvalidSpec`` naming each
    bad field (without the kind in front of it)."""
    if not isinstance(data, dict):
        raise InvalidSpec(f"volume: expected a mapping at the top level, got {type(data).__name__}")
    if data.get("kind") not in VOLUME_KINDS:
        message = f"must be one of {', '.join(VOLUME_KINDS)}, got {data.get('kind')!r}"
        raise InvalidSpec(f"volume: kind: {message}", details=[{"loc": "kind", "message": message}])
    from pydantic import ValidationError

    try:
        return _VOLUME.validate_python(data)
    except ValidationError as exc:
        given = data.get("credentials")
        secrets = given if isinstance(given, dict) else {}  # a bad credential is named, never quoted
        details = [
            {**d, "loc": d["loc"].split(".", 1)[-1], "message": masked(d["message"], secrets)} for d in spec_errors(exc)
        ]
        summary = "; ".join(f"{d['loc']}: {d['message']}" for d in details) or masked(exc_summary(exc), secrets)
        raise InvalidSpec(f"volume: {summary}", details=details) from None


def to_model(row: VolumeRow, workspace: str) -> Volume:
    return Volume(
        name=row.name,
        workspace=workspace,
        kind=row.kind,
        spec=row.spec,
        has_credentials=bool(row.credentials),
        created_at=datetime.fromtimestamp(row.created_at, UTC),
        created_by=row.created_by,
    )


def masked(text: str, secrets: dict[str, Any]) -> str:
    for value in secrets.values():
        if isinstance(value, str) and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def create_volume(db: Database, *, workspace: str, data: Any, access: Access) -> Volume:
    spec = parse_volume(data)
    if spec.kind == "path" and access.role != "admin":
        raise Forbidden(
            "only admins make path volumes: their members read and write that directory with the server's rights"
        )
    stored = spec.model_dump(mode="json", exclude={"credentials"}, exclude_none=True)
    credentials = spec.credentials.model_dump(exclude_none=True) if getattr(spec, "credentials", None) else {}
    with db.read() as session:
        ws = workspace_row(session, workspace)
        _refuse_taken(session, ws.id, spec.name, workspace)
    try:  # outside any transaction: a store may take seconds to answer
        check(store_for(stored, credentials), spec.kind)
    except InvalidRequest as exc:
        raise InvalidRequest(masked(exc.message, credentials)) from None
    with db.write() as session:
        ws = workspace_row(session, workspace)
        _refuse_taken(session, ws.id, spec.name, workspace)
        row = VolumeRow(
            workspace_id=ws.id, name=spec.name, kind=spec.kind, spec=stored, credentials=credentials,
            created_at=time.time(), created_by=access.user,
        )  # fmt: skip
        session.add(row)
        session.flush()
        return to_model(row, workspace)


def _refuse_taken(session: Session, workspace_id: int, name: str, workspace: str) -> None:
    query = select(VolumeRow.id).where(VolumeRow.workspace_id == workspace_id, VolumeRow.name == name)
    if session.scalars(query).first() is not None:
        raise AlreadyExists(f"volume {name!r} already exists in workspace {workspace!r}")


def volume_row(session: Session, workspace: str, name: str) -> VolumeRow:
    ws = workspace_row(session, workspace)
    row = session.scalars(select(VolumeRow).where(VolumeRow.workspace_id == ws.id, VolumeRow.name == name)).first()
    if row is None:
        names = session.scalars(select(VolumeRow.name).where(VolumeRow.workspace_id == ws.id))
        raise NotFound(f"volume {name!r} not found in workspace {workspace!r}{did_you_mean(name, names)}")
    return row


def list_volumes(session: Session, *, workspace: str) -> list[Volume]:
    ws = workspace_row(session, workspace)
    rows = session.scalars(select(VolumeRow).where(VolumeRow.workspace_id == ws.id).order_by(VolumeRow.name))
    return [to_model(row, workspace) for row in rows]


def get_volume(session: Session, *, workspace: str, name: str) -> Volume:
    return to_model(volume_row(session, workspace, name), workspace)


def delete_volume(session: Session, *, workspace: str, name: str) -> None:
    """Forget the volume (its data stays where it is); a queued job that stages from it fails at its start."""
    session.delete(volume_row(session, workspace, name))


# ---------------------------------------------------------------- files


def store_of(db: Database, workspace: str, name: str) -> tuple[Store, dict[str, Any]]:
    with db.read() as session:
        row = volume_row(session, workspace, name)
        return store_for(row.spec, row.credentials or {}), dict(row.credentials or {})


def _relative(path: str) -> str:
    try:
        return relative_path(path)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def _store_call(secrets: dict[str, Any], what: str, call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except FileNotFoundError:
        raise NotFound(f"no such file or folder in the volume: {what or '.'}") from None
    except CorralError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise StoreError(masked(f"{type(exc).__name__}: {text[0][:300] if text else ''}", secrets)) from None


def list_files(db: Database, *, workspace: str, name: str, path: str, cursor: str | None, limit: int) -> FilePage:
    store, secrets = store_of(db, workspace, name)
    return list_in(store, secrets, path, cursor=cursor, limit=limit)


def list_in(store: Store, secrets: dict[str, Any], path: str, *, cursor: str | None, limit: int) -> FilePage:
    """One page of what is at ``path`` under the store's root (one level), by name."""
    relative = _relative(path)
    if store.protocol == "file":
        return list_directory(Path(store.root), relative, cursor=cursor, limit=limit)
    fs = store.open()
    full = store.path(relative)
    found = _store_call(secrets, relative, fs.ls, full, True)
    if not found and relative:
        raise NotFound(f"no such file or folder in the volume: {relative}")
    entries = []
    for info in sorted(found, key=lambda i: i["name"]):
        entry_name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        if cursor is not None and entry_name <= cursor:
            continue
        entries.append(_entry(info, store.root, entry_name))
    more = len(entries) > limit
    entries = entries[:limit]
    return FilePage(entries=entries, next_cursor=entries[-1].name if more else None)


def _entry(info: dict[str, Any], root: str, name: str) -> FileEntry:
    when = info.get("LastModified") or info.get("last_modified") or info.get("mtime")
    if isinstance(when, int | float):
        when = datetime.fromtimestamp(when, UTC)
    path = info["name"].rstrip("/")[len(root) :].lstrip("/")
    is_dir = info.get("type") == "directory"
    return FileEntry(
        name=name,
        path=path,
        is_dir=is_dir,
        size=0 if is_dir else int(info.get("size") or 0),
        modified_at=when if isinstance(when, datetime) else datetime.fromtimestamp(0, UTC),
    )


def read_file(db: Database, *, workspace: str, name: str, path: str) -> Iterator[bytes]:
    """The content of a file of the volume, in chunks (opened before the first, so a missing file is a 404)."""
    store, secrets = store_of(db, workspace, name)
    return read_in(store, secrets, path)


def read_in(store: Store, secrets: dict[str, Any], path: str) -> Iterator[bytes]:
    """The content of the file at ``path`` under the store's root, in chunks."""
    relative = _relative(path)
    if store.protocol == "file":
        handle: Any = open(file_to_read(Path(store.root), relative), "rb")  # noqa: SIM115 - closed by chunks()
    else:
        fs = store.open()
        full = store.path(relative)
        if _store_call(secrets, relative, fs.isdir, full):
            raise InvalidRequest(f"path: {relative!r} is a folder; list it, or give a file")
        handle = _store_call(secrets, relative, fs.open, full, "rb")
    return chunks(handle)


def chunks(handle: Any) -> Iterator[bytes]:
    with handle:
        while block := handle.read(CHUNK):
            yield block


def open_for_write(db: Database, *, workspace: str, name: str, path: str) -> tuple[Any, dict[str, Any]]:
    """A file of the volume open for writing (a new object, or the file replaced), and the secrets to mask."""
    store, secrets = store_of(db, workspace, name)
    relative = _relative(path)
    if not relative:
        raise InvalidRequest("path: give the file's path in the volume")
    if store.protocol == "file":
        target = resolve_inside(Path(store.root), relative)
        if target.is_dir():
            raise InvalidRequest(f"path: {relative!r} is a folder")
        os.makedirs(target.parent, exist_ok=True)
        resolve_inside(Path(store.root), relative)  # the folders made: still inside
        return open(target, "wb"), secrets
    fs = store.open()
    return _store_call(secrets, relative, fs.open, store.path(relative), "wb"), secrets


def finish_write(handle: Any, secrets: dict[str, Any], path: str) -> None:
    """Close a file written through :func:`open_for_write`: on a store, what completes the upload."""
    _store_call(secrets, path, handle.close)


def abandon_write(handle: Any) -> None:
    """A write that failed midway: an object store keeps nothing of it (a partial file on a disk stays)."""
    discard = getattr(handle, "discard", None)
    with contextlib.suppress(Exception):  # the failure that brought us here is the one to report
        discard() if discard is not None else handle.close()
