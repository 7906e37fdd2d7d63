from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from corral.core.models import FilePage, Volume
from corral.server.deps import Allowed, Ctx, PathName
from corral.server.openapi import FILE_BODY, FILE_RESPONSE, VolumeSpecBody
from corral.server.services import volumes as service

router = APIRouter(prefix="/workspaces/{ws}/volumes", tags=["volumes"])


@router.post("", status_code=201)
def create_volume(ws: PathName, ctx: Ctx, access: Allowed, spec: VolumeSpecBody) -> Volume:
    """A new volume; its store is reached once first (a listing) with its credentials, which are never returned."""
    return service.create_volume(ctx.db, workspace=ws, data=spec, access=access)


@router.get("")
async def list_volumes(ws: PathName, ctx: Ctx) -> list[Volume]:
    return await ctx.read(lambda session: service.list_volumes(session, workspace=ws))


@router.get("/{name}")
async def get_volume(ws: PathName, name: PathName, ctx: Ctx) -> Volume:
    return await ctx.read(lambda session: service.get_volume(session, workspace=ws, name=name))


@router.delete("/{name}", status_code=204)
def delete_volume(ws: PathName, name: PathName, ctx: Ctx) -> Response:
    """Forget the volume; its data stays in its store."""
    with ctx.db.write() as session:
        service.delete_volume(session, workspace=ws, name=name)
    return Response(status_code=204)


@router.get("/{name}/files")
def list_volume_files(
    ws: PathName, name: PathName, ctx: Ctx, path: str = "", cursor: str | None = None,
    limit: int = Query(1000, ge=1, le=10000),
) -> FilePage:  # fmt: skip
    """The files and folders at ``path`` in the volume (one level), by name."""
    return service.list_files(ctx.db, workspace=ws, name=name, path=path, cursor=cursor, limit=limit)


@router.get("/{name}/files/content", response_model=None, responses=FILE_RESPONSE)
def download_volume_file(ws: PathName, name: PathName, ctx: Ctx, path: str) -> StreamingResponse:
    chunks = service.read_file(ctx.db, workspace=ws, name=name, path=path)
    return StreamingResponse(chunks, media_type="application/octet-stream")


@router.put("/{name}/files/content", status_code=204, openapi_extra=FILE_BODY)
async def upload_volume_file(ws: PathName, name: PathName, path: str, request: Request, ctx: Ctx) -> Response:
    """Write the body to ``path`` in the volume (streamed, never held whole); a file there is replaced."""
    target, secrets = await run_in_threadpool(service.open_for_write, ctx.db, workspace=ws, name=name, path=path)
    try:
        async for chunk in request.stream():
            if chunk:
                await run_in_threadpool(target.write, chunk)
        await run_in_threadpool(service.finish_write, target, secrets, path)
    except BaseException:
        await run_in_threadpool(service.abandon_write, target)
        raise
    return Response(status_code=204)
