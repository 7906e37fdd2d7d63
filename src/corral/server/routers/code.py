from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response

from corral.core.errors import NotFound
from corral.server.deps import Ctx, PathName
from corral.server.openapi import ARCHIVE_BODY
from corral.server.services import code as service

router = APIRouter(prefix="/workspaces/{ws}/code", tags=["code"])
Sha = Path(pattern=r"^[0-9a-f]{64}$")


@router.get("/{sha256}", status_code=204)
def has_code(ws: PathName, ctx: Ctx, sha256: str = Sha) -> Response:
    if not service.has_archive(ctx.settings, ws, sha256):
        raise NotFound(f"code archive {sha256} was not uploaded")
    return Response(status_code=204)


@router.put("/{sha256}", status_code=204, openapi_extra=ARCHIVE_BODY)
async def put_code(ws: PathName, request: Request, ctx: Ctx, sha256: str = Sha) -> Response:
    """Upload a gzipped tar named by its SHA-256 (the body is streamed to disk, never held whole)."""
    length = request.headers.get("content-length")
    declared = int(length) if length and length.isdigit() else None
    await service.receive_archive(ctx.settings, ws, sha256, body=request.stream(), declared_size=declared)
    return Response(status_code=204)
