from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from corral.core.models import User, UserCreate, UserCreated
from corral.server.deps import Allowed, Ctx, UserPathName
from corral.server.services import commands
from corral.server.services import users as service

router = APIRouter(prefix="/users", tags=["users"])
#: A token's life in seconds (none: it works until revoked).
ExpiresIn = Annotated[float | None, Query(gt=0, le=10 * 365 * 86400, description="Seconds the token works.")]


@router.post("", status_code=201)
def create_user(body: UserCreate, ctx: Ctx, expires_in: ExpiresIn = None) -> UserCreated:
    """A new user and its token (shown once). Admins only."""
    return commands.create_user(ctx, request=body, expires_in=expires_in)


@router.get("/me")
async def whoami(ctx: Ctx, access: Allowed) -> User:
    """The user the token belongs to."""
    return await ctx.read(lambda session: service.get_user(session, name=access.user))


@router.get("")
def list_users(ctx: Ctx) -> list[User]:
    """Every user. Admins only."""
    with ctx.db.read() as session:
        return service.list_users(session)


@router.delete("/{name}", status_code=204)
def delete_user(name: UserPathName, ctx: Ctx, access: Allowed) -> Response:
    """Remove a user; their token stops working at once. Admins only; not oneself, not the last admin."""
    commands.delete_user(ctx, name=name, by=access.user)
    return Response(status_code=204)


@router.post("/{name}/token", status_code=201)
def new_token(name: UserPathName, ctx: Ctx, expires_in: ExpiresIn = None) -> UserCreated:
    """A new token for the user (shown once); the old one stops working at once. Admins, or the user for
    their own token."""
    return commands.new_token(ctx, name=name, expires_in=expires_in)


@router.delete("/{name}/token", status_code=204)
def revoke_token(name: UserPathName, ctx: Ctx) -> Response:
    """Revoke the user's token without giving a new one: it stops working at once (``new_token`` gives one
    again). Admins, or the user for their own token."""
    commands.revoke_token(ctx, name=name)
    return Response(status_code=204)
