from __future__ import annotations

from fastapi import APIRouter, Response

from corral.core.errors import Forbidden
from corral.core.models import Member, MemberSet, Quota, Usage, Workspace, WorkspaceCreate
from corral.server.access import cached_roles
from corral.server.deps import Allowed, Ctx, PathName, UserPathName
from corral.server.services import commands
from corral.server.services import usage as usage_service
from corral.server.services import workspaces as service

router = APIRouter(tags=["workspaces"])


@router.get("/workspaces")
def list_workspaces(ctx: Ctx, access: Allowed) -> list[Workspace]:
    """The workspaces where the caller holds a role (an admin: all), with that role."""
    assert access.principal is not None
    roles = None if access.principal.is_admin else cached_roles(ctx, access.principal.name)
    with ctx.db.read() as session:
        return service.list_workspaces(session, roles=roles)


@router.post("/workspaces", status_code=201)
def create_workspace(body: WorkspaceCreate, ctx: Ctx, access: Allowed) -> Workspace:
    """A new workspace: admins (who may name its ``owner``), or any user who then owns it where the server lets
    users create workspaces (``CORRAL_USERS_CREATE_WORKSPACES``)."""
    assert access.principal is not None
    owner = body.owner
    if not access.principal.is_admin:
        if owner not in (None, access.principal.name):
            raise Forbidden("only admins name another user as a new workspace's owner")
        owner = access.principal.name
    return commands.create_workspace(ctx, name=body.name, owner=owner)


@router.get("/workspaces/{ws}")
async def get_workspace(ws: PathName, ctx: Ctx, access: Allowed) -> Workspace:
    return await ctx.read(lambda session: service.get_workspace(session, name=ws, role=access.role))


@router.put("/workspaces/{ws}/quota")
def set_quota(ws: PathName, body: Quota, ctx: Ctx) -> Workspace:
    """Nodes and GPUs the workspace's jobs may hold at once (null: no limit). Admins only."""
    return commands.set_quota(ctx, workspace=ws, quota=body)


@router.get("/workspaces/{ws}/usage")
def get_usage(ws: PathName, ctx: Ctx) -> Usage:
    with ctx.db.read() as session:
        return usage_service.workspace_usage(session, workspace=ws)


@router.get("/workspaces/{ws}/members")
async def list_members(ws: PathName, ctx: Ctx) -> list[Member]:
    """Who holds which role in the workspace (admins hold every right without one)."""
    return await ctx.read(lambda session: service.list_members(session, workspace=ws))


@router.put("/workspaces/{ws}/members/{user}")
def set_member(ws: PathName, user: UserPathName, body: MemberSet, ctx: Ctx) -> Member:
    """Give a user a role in the workspace, or change theirs. Owners and admins."""
    return commands.set_member(ctx, workspace=ws, user=user, role=body.role)


@router.delete("/workspaces/{ws}/members/{user}", status_code=204)
def remove_member(ws: PathName, user: UserPathName, ctx: Ctx) -> Response:
    """Take a user's role in the workspace away; their jobs stay. Owners and admins."""
    commands.remove_member(ctx, workspace=ws, user=user)
    return Response(status_code=204)
