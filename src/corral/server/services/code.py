"""Code archives uploaded by clients, stored once per SHA-256 under ``<home>/code``.

An archive serves the workspaces it was uploaded to only (a mark per workspace, ``<home>/code-workspaces``):
knowing another workspace's archive's SHA-256 is not enough to run its code, sending its bytes is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from corral.core.errors import TooLarge
from corral.server.settings import Settings
from corral.storage.code import ArchiveUpload


def _mark(settings: Settings, workspace: str, sha256: str) -> Path:
    return settings.code_marks_dir / workspace / sha256


def has_archive(settings: Settings, workspace: str, sha256: str) -> bool:
    """Whether the archive was uploaded to the workspace (and is still stored)."""
    return _mark(settings, workspace, sha256).exists() and (settings.code_dir / f"{sha256}.tar.gz").exists()


async def receive_archive(
    settings: Settings, workspace: str, sha256: str, *, body: AsyncIterator[bytes], declared_size: int | None
) -> None:
    """Store an upload as it arrives: refused at once when its declared size passes the limit, as soon as the
    bytes do otherwise; checked (members, unpacked size) off the event loop, then moved in place."""
    limit = settings.max_code_bytes
    if declared_size is not None and declared_size > limit:
        raise TooLarge(f"code archive: {declared_size} bytes, more than the {limit}-byte limit (max_code_bytes)")
    upload = ArchiveUpload(settings.code_dir, sha256, max_bytes=limit)
    try:
        async for chunk in body:
            upload.write(chunk)
        await asyncio.to_thread(
            upload.finish,
            max_unpacked_bytes=settings.max_code_unpacked_bytes,
            max_members=settings.max_code_members,
        )
    finally:
        upload.discard()
    mark = _mark(settings, workspace, sha256)
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.touch()
