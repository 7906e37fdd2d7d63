from __future__ import annotations

from fastapi import APIRouter, Response

from corral.core.models import User, UserCreate, UserCreated
from corral.server.auth import require_admin
from corral.server.deps import Ctx, CurrentPrincipal, PathName
from corral.server.services import commands
from corral.server.services import users as service

router = APIRouter(prefix="/users", tags=["users"])


@router.post("", status_code=201)
def create_user(body: UserCreate, ctx: Ctx, principal: CurrentPrincipal) -> UserCreated:
    """A new user and its token (shown once). Admins only."""
    require_admin(principal)
    with ctx.db.write() as session:
        return service.create_user(session, name=body.name, admin=body.admin)


@router.get("/me")
def whoami(ctx: Ctx, principal: CurrentPrincipal) -> User:
    """The user the token belongs to."""
    with ctx.db.read() as session:
        return service.get_user(session, name=principal.name)


@router.get("")
def list_users(ctx: Ctx, principal: CurrentPrincipal) -> list[User]:
    require_admin(principal)
    with ctx.db.read() as session:
        return service.list_users(session)


@router.delete("/{name}", status_code=204)
def delete_user(name: PathName, ctx: Ctx, principal: CurrentPrincipal) -> Response:
    """Remove a user; their token stops working at once. Admins only; not oneself, not the last admin."""
    require_admin(principal)
    commands.delete_user(ctx, name=name, by=principal.name)
    return Response(status_code=204)


@router.post("/{name}/token", status_code=201)
def new_token(name: PathName, ctx: Ctx, principal: CurrentPrincipal) -> UserCreated:
    """A new token for the user (shown once); the old one stops working at once. Admins, or the user for
    their own token."""
    if name != principal.name:
        require_admin(principal)
    return commands.new_token(ctx, name=name)
