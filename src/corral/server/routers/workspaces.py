from __future__ import annotations

from fastapi import APIRouter

from corral.core.models import Quota, Usage, Workspace, WorkspaceCreate
from corral.server.auth import require_admin
from corral.server.deps import AdminPrincipal, Ctx, CurrentPrincipal, PathName
from corral.server.services import commands
from corral.server.services import usage as usage_service
from corral.server.services import workspaces as service

router = APIRouter(tags=["workspaces"])


@router.get("/workspaces")
def list_workspaces(ctx: Ctx, _p: CurrentPrincipal) -> list[Workspace]:
    with ctx.db.read() as session:
        return service.list_workspaces(session)


@router.post("/workspaces", status_code=201)
def create_workspace(body: WorkspaceCreate, ctx: Ctx, _a: AdminPrincipal) -> Workspace:
    """A new workspace. Admins only."""
    with ctx.db.write() as session:
        return service.create_workspace(session, name=body.name)


@router.get("/workspaces/{ws}")
def get_workspace(ws: PathName, ctx: Ctx, _p: CurrentPrincipal) -> Workspace:
    with ctx.db.read() as session:
        return service.get_workspace(session, name=ws)


@router.put("/workspaces/{ws}/quota")
def set_quota(ws: PathName, body: Quota, ctx: Ctx, principal: CurrentPrincipal) -> Workspace:
    """Nodes and GPUs the workspace's jobs may hold at once (null: no limit). Admins only."""
    require_admin(principal)
    return commands.set_quota(ctx, workspace=ws, quota=body)


@router.get("/workspaces/{ws}/usage")
def get_usage(ws: PathName, ctx: Ctx, _p: CurrentPrincipal) -> Usage:
    with ctx.db.read() as session:
        return usage_service.workspace_usage(session, workspace=ws)
