"""Who may call what: one dependency in front of every route, and the one table it follows.

Each route of the API has a rule in :data:`RULES`, keyed by its method and path; ``create_app`` refuses to
start when a route has none, and ``tests/integration/test_access.py`` calls every route as every role and
checks the answer against this table. The rules:

- ``public``: anyone (``/health``);
- ``user``: any valid token; ``self``: the user named in the path, or an admin; ``admin``: admins only;
- ``creator``: admins, or any user when ``CORRAL_USERS_CREATE_WORKSPACES`` is on (creating workspaces);
- ``reader`` < ``contributor`` < ``owner``: at least this role in the workspace of the path (``{ws}``).
  A user with no role there gets 404, exactly as for a workspace that does not exist, so names do not leak;
  a role too low gets 403. Admins pass every rule.

What a rule cannot say — a contributor terminates and deletes only their own jobs — is checked on the resource
by :meth:`Access.check_job_change`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Literal, cast

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import select

from corral.core.errors import Forbidden, NotFound, Unauthorized
from corral.core.models import ROLES, Role
from corral.server.auth import Principal, authenticate, bearer
from corral.server.context import ServerContext
from corral.store.db import Database
from corral.store.tables import MemberRow, PrincipalRow, WorkspaceRow

Rule = Literal["public", "user", "self", "admin", "creator", "reader", "contributor", "owner"]
#: Paths below the API's prefix (``/api/v1``).
RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/health"): "public",
    # users and tokens
    ("GET", "/users/me"): "user",
    ("GET", "/users"): "admin",
    ("POST", "/users"): "admin",
    ("DELETE", "/users/{name}"): "admin",
    ("POST", "/users/{name}/token"): "self",
    ("DELETE", "/users/{name}/token"): "self",
    ("GET", "/audit"): "admin",
    # workspaces and their members
    ("GET", "/workspaces"): "user",
    ("POST", "/workspaces"): "creator",
    ("GET", "/workspaces/{ws}"): "reader",
    ("PUT", "/workspaces/{ws}/quota"): "admin",
    ("GET", "/workspaces/{ws}/usage"): "reader",
    ("GET", "/workspaces/{ws}/members"): "reader",
    ("PUT", "/workspaces/{ws}/members/{user}"): "owner",
    ("DELETE", "/workspaces/{ws}/members/{user}"): "owner",
    # clusters and nodes
    ("GET", "/workspaces/{ws}/clusters"): "reader",
    ("POST", "/workspaces/{ws}/clusters"): "owner",
    ("GET", "/workspaces/{ws}/clusters/{name}"): "reader",
    ("DELETE", "/workspaces/{ws}/clusters/{name}"): "owner",
    ("POST", "/workspaces/{ws}/clusters/{name}/resize"): "owner",
    ("POST", "/workspaces/{ws}/clusters/{name}/autoscale"): "owner",
    ("GET", "/workspaces/{ws}/clusters/{name}/nodes"): "reader",
    ("GET", "/workspaces/{ws}/clusters/{name}/nodes/{node}/logs"): "reader",
    ("POST", "/workspaces/{ws}/clusters/{name}/nodes/{node}/exec"): "owner",
    ("POST", "/workspaces/{ws}/clusters/{name}/nodes/{node}/preempt"): "owner",
    ("POST", "/workspaces/{ws}/clusters/{name}/nodes/{node}/recover"): "owner",
    # experiments
    ("GET", "/workspaces/{ws}/experiments"): "reader",
    ("POST", "/workspaces/{ws}/experiments"): "contributor",
    ("GET", "/workspaces/{ws}/experiments/{name}"): "reader",
    ("DELETE", "/workspaces/{ws}/experiments/{name}"): "owner",
    # a job's metrics (a report: the job's submitter, or an owner, said by the route)
    ("GET", "/workspaces/{ws}/experiments/{exp}/jobs/{name}/metrics"): "reader",
    ("POST", "/workspaces/{ws}/experiments/{exp}/jobs/{name}/metrics"): "contributor",
    ("GET", "/workspaces/{ws}/experiments/{exp}/jobs/{name}/metrics/{metric}"): "reader",
    # sweeps (terminate: its maker, or an owner, said by the command)
    ("GET", "/workspaces/{ws}/experiments/{exp}/sweeps"): "reader",
    ("POST", "/workspaces/{ws}/experiments/{exp}/sweeps"): "contributor",
    ("GET", "/workspaces/{ws}/experiments/{exp}/sweeps/{name}"): "reader",
    ("POST", "/workspaces/{ws}/experiments/{exp}/sweeps/{name}/terminate"): "contributor",
    # volumes (a path volume: admins only, said by the service)
    ("GET", "/workspaces/{ws}/volumes"): "reader",
    ("POST", "/workspaces/{ws}/volumes"): "owner",
    ("GET", "/workspaces/{ws}/volumes/{name}"): "reader",
    ("DELETE", "/workspaces/{ws}/volumes/{name}"): "owner",
    ("GET", "/workspaces/{ws}/volumes/{name}/files"): "reader",
    ("GET", "/workspaces/{ws}/volumes/{name}/files/content"): "reader",
    ("PUT", "/workspaces/{ws}/volumes/{name}/files/content"): "contributor",
    # code
    ("GET", "/workspaces/{ws}/code/{sha256}"): "contributor",
    ("PUT", "/workspaces/{ws}/code/{sha256}"): "contributor",
    # jobs
    ("GET", "/workspaces/{ws}/jobs"): "reader",
    ("GET", "/workspaces/{ws}/experiments/{exp}/jobs"): "reader",
    ("POST", "/workspaces/{ws}/experiments/{exp}/jobs"): "contributor",
    ("POST", "/workspaces/{ws}/experiments/{exp}/jobs/batch"): "contributor",
    ("GET", "/workspaces/{ws}/experiments/{exp}/jobs/{name}"): "reader",
    ("DELETE", "/workspaces/{ws}/experiments/{exp}/jobs/{name}"): "contributor",
    ("GET", "/workspaces/{ws}/experiments/{exp}/jobs/{name}/wait"): "reader",
    ("POST", "/workspaces/{ws}/experiments/{exp}/jobs/{name}/terminate"): "contributor",
    ("GET", "/workspaces/{ws}/experiments/{exp}/jobs/{name}/events"): "reader",
    ("GET", "/workspaces/{ws}/experiments/{exp}/jobs/{name}/logs"): "reader",
    ("GET", "/workspaces/{ws}/experiments/{exp}/jobs/{name}/files"): "reader",
    ("GET", "/workspaces/{ws}/experiments/{exp}/jobs/{name}/files/content"): "reader",
}
_RANK: dict[str, int] = {role: i for i, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Access:
    """The caller of a request (None on a public route without a valid token), and their role in the
    workspace of its path (``admin`` for an admin)."""

    principal: Principal | None
    workspace: str | None = None
    role: Role | Literal["admin"] | None = None

    @property
    def user(self) -> str:
        return self.principal.name if self.principal else "-"

    def check_job_change(self, *, submitted_by: str, job: str) -> None:
        """Terminating or deleting a job: its submitter (a contributor at least), an owner, or an admin."""
        if self.role in ("owner", "admin") or (self.role == "contributor" and submitted_by == self.user):
            return
        raise Forbidden(f"job {job!r} is {submitted_by!r}'s: only they or an owner of the workspace may change it")


def api_routes(app: FastAPI, prefix: str) -> set[tuple[str, str]]:
    """Each (method, path below ``prefix``) of the API, as its schema lists them."""
    paths: dict[str, dict[str, object]] = app.openapi()["paths"]
    return {(method.upper(), path.removeprefix(prefix)) for path, ops in paths.items() for method in ops}


def check_rules(app: FastAPI, prefix: str) -> None:
    """Every route has a rule (and every rule a route): a new route without one stops the server at start."""
    routes = api_routes(app, prefix)
    if missing := sorted(routes - RULES.keys()):
        raise RuntimeError(f"routes without an access rule in corral.server.access.RULES: {missing}")
    if stale := sorted(RULES.keys() - routes):
        raise RuntimeError(f"access rules for routes that do not exist: {stale}")


def load_roles(db: Database, user: str) -> dict[str, Role]:
    """The user's role in each workspace where they hold one."""
    query = (
        select(WorkspaceRow.name, MemberRow.role)
        .join(MemberRow, MemberRow.workspace_id == WorkspaceRow.id)
        .join(PrincipalRow, PrincipalRow.id == MemberRow.principal_id)
        .where(PrincipalRow.name == user)
    )
    with db.read() as session:
        return {ws: cast(Role, role) for ws, role in session.execute(query)}


def cached_roles(ctx: ServerContext, user: str) -> dict[str, Role]:
    """The user's roles, cached; every change of members, users or workspaces empties the cache (so a change
    holds from the next request)."""
    roles = ctx.roles.get(user)
    if roles is None:
        roles = ctx.roles[user] = load_roles(ctx.db, user)
    return roles


async def authorize(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Access:
    """The one authorisation point: the route's rule applied to the caller (401, 403 or 404 when refused)."""
    # The route's path as declared, without converters (``{metric:path}`` is ``{metric}``, as in the schema; older
    # FastAPI versions add the prefix the router is included with)
    path = request.scope["route"].path_format
    rule = RULES[(request.method, path.removeprefix(request.app.state.api_prefix))]
    if rule == "public":
        try:
            return Access(await authenticate(request, credentials))
        except Unauthorized:
            return Access(None)
    principal = await authenticate(request, credentials)
    if principal.is_admin:
        return Access(principal, request.path_params.get("ws"), "admin")
    if rule == "user":
        return Access(principal)
    if rule == "self":
        if request.path_params.get("name") != principal.name:
            raise Forbidden(f"user {principal.name!r} may do this for themselves only")
        return Access(principal)
    if rule == "admin":
        raise Forbidden(f"user {principal.name!r} is not an admin")
    if rule == "creator":
        if not request.app.state.context.settings.users_create_workspaces:
            raise Forbidden("only admins create workspaces here (the server's CORRAL_USERS_CREATE_WORKSPACES)")
        return Access(principal)
    ctx = request.app.state.context
    return await workspace_access(ctx, principal, request.path_params["ws"], rule)


async def workspace_access(ctx: ServerContext, principal: Principal, workspace: str, rule: Role) -> Access:
    """At least ``rule`` in the workspace (the API's routes, and the portal's pages of a workspace)."""
    if principal.is_admin:
        return Access(principal, workspace, "admin")
    roles = ctx.roles.get(principal.name)
    if roles is None:  # off the event loop: a database read
        roles = await asyncio.to_thread(cached_roles, ctx, principal.name)
    role = roles.get(workspace)
    if role is None:
        raise NotFound(f"workspace {workspace!r} not found")
    if _RANK[role] < _RANK[rule]:
        raise Forbidden(f"user {principal.name!r} is a {role} of workspace {workspace!r}; this needs {rule}")
    return Access(principal, workspace, role)


#: The caller of a route, authorised by its rule (every router is included behind this dependency).
Allowed = Annotated[Access, Depends(authorize)]
