"""Listing and reading files under a job's directories, never outside them.

A requested path is relative; ``..`` and absolute paths are refused before
touching the disk, and the resolved path (symlinks followed) must still lie
under the root, so a symlink pointing out is refused too.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from corral.core.errors import InvalidRequest, NotFound
from corral.core.models import FileEntry, FilePage


def resolve_inside(root: Path, path: str) -> Path:
    if "\x00" in path:
        raise InvalidRequest("path: must not contain a NUL character")
    pure = PurePosixPath(path or ".")
    if pure.is_absolute() or path.startswith("\\"):
        raise InvalidRequest(f"path: must be relative to the directory, got {path!r}")
    if ".." in pure.parts:
        raise InvalidRequest(f"path: must not contain '..', got {path!r}")
    root_real = Path(os.path.realpath(root))
    full = Path(os.path.realpath(root_real / pure))
    if full != root_real and not full.is_relative_to(root_real):
        raise InvalidRequest(f"path: {path!r} leads outside the directory (through a symlink)")
    return full


def _entry(root: Path, item: Path) -> FileEntry:
    st = item.stat()
    return FileEntry(
        name=item.name,
        path=item.relative_to(root).as_posix(),
        is_dir=item.is_dir(),
        size=0 if item.is_dir() else st.st_size,
        modified_at=datetime.fromtimestamp(st.st_mtime, UTC),
    )


def list_directory(root: Path, path: str, *, cursor: str | None = None, limit: int = 100) -> FilePage:
    """One page of the entries of ``root/path``, by name; ``cursor`` is the last name seen."""
    root_real = Path(os.path.realpath(root))
    target = resolve_inside(root_real, path)
    if not target.exists():
        raise NotFound(f"no such file or directory: {path or '.'}")
    if not target.is_dir():
        return FilePage(entries=[_entry(root_real, target)])
    names = sorted(os.listdir(target))
    if cursor is not None:
        names = [n for n in names if n > cursor]
    entries = []
    for name in names[:limit]:
        item = target / name
        # A symlink leading out of the root is listed as what it is not: skip it.
        if not Path(os.path.realpath(item)).is_relative_to(root_real):
            continue
        entries.append(_entry(root_real, item))
    more = len(names) > limit
    return FilePage(entries=entries, next_cursor=names[limit - 1] if more else None)


def file_to_read(root: Path, path: str) -> Path:
    target = resolve_inside(root, path)
    if not target.is_file():
        raise NotFound(f"no such file: {path}")
    return target
