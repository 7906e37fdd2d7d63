from __future__ import annotations

from fastapi import APIRouter

from corral.core.errors import Forbidden
from corral.core.models import User, UserCreate, UserCreated
from corral.server.auth import Principal
from corral.server.deps import Ctx, CurrentPrincipal
from corral.server.services import users as service

router = APIRouter(prefix="/users", tags=["users"])


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden(f"user {principal.name!r} is not an admin")


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
