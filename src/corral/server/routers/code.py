from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response

from corral.core.errors import NotFound
from corral.server.deps import Ctx, CurrentPrincipal
from corral.server.services import code as service

router = APIRouter(prefix="/workspaces/{ws}/code", tags=["code"])
Sha = Path(pattern=r"^[0-9a-f]{64}$")


@router.get("/{sha256}", status_code=204)
def has_code(ws: str, ctx: Ctx, _p: CurrentPrincipal, sha256: str = Sha) -> Response:
    if not service.has_archive(ctx.settings.code_dir, sha256):
        raise NotFound(f"code archive {sha256} was not uploaded")
    return Response(status_code=204)


@router.put("/{sha256}", status_code=204)
async def put_code(ws: str, request: Request, ctx: Ctx, _p: CurrentPrincipal, sha256: str = Sha) -> Response:
    data = await request.body()
    service.store_archive(ctx.settings.code_dir, sha256, data, max_bytes=ctx.settings.max_code_bytes)
    return Response(status_code=204)
