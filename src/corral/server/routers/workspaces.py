from __future__ import annotations

from fastapi import APIRouter

from corral.core.models import Workspace, WorkspaceCreate
from corral.server.deps import Ctx, CurrentPrincipal
from corral.server.services import workspaces as service

router = APIRouter(tags=["workspaces"])


@router.get("/workspaces")
def list_workspaces(ctx: Ctx, _p: CurrentPrincipal) -> list[Workspace]:
    with ctx.db.read() as session:
        return service.list_workspaces(session)


@router.post("/workspaces", status_code=201)
def create_workspace(body: WorkspaceCreate, ctx: Ctx, _p: CurrentPrincipal) -> Workspace:
    with ctx.db.write() as session:
        return service.create_workspace(session, name=body.name)


@router.get("/workspaces/{ws}")
def get_workspace(ws: str, ctx: Ctx, _p: CurrentPrincipal) -> Workspace:
    with ctx.db.read() as session:
        return service.get_workspace(session, name=ws)
