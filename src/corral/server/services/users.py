"""Users: principals with a token each (stored hashed). Only an admin creates them."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from corral.core.errors import AlreadyExists, Conflict, NotFound
from corral.core.models import User, UserCreated
from corral.server.auth import token_hash
from corral.store.tables import PrincipalRow


def _model(row: PrincipalRow) -> User:
    expires = row.token_expires_at
    return User(
        name=row.name,
        admin=row.is_admin,
        created_at=datetime.fromtimestamp(row.created_at, UTC),
        token_expires_at=None if expires is None else datetime.fromtimestamp(expires, UTC),
        unix_user=row.unix_user,
    )


def _expiry(expires_in: float | None) -> float | None:
    return None if expires_in is None else time.time() + expires_in


def check_new(session: Session, *, name: str) -> None:
    if session.scalars(select(PrincipalRow).where(PrincipalRow.name == name)).first() is not None:
        raise AlreadyExists(f"user {name!r} already exists")


def create_user(
    session: Session, *, name: str, admin: bool, expires_in: float | None = None, unix_user: str | None = None
) -> UserCreated:
    check_new(session, name=name)
    token = secrets.token_urlsafe(32)
    row = PrincipalRow(
        name=name, token_sha256=token_hash(token), is_admin=admin, created_at=time.time(),
        token_expires_at=_expiry(expires_in), unix_user=unix_user,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return UserCreated(**_model(row).model_dump(), token=token)


def list_users(session: Session) -> list[User]:
    return [_model(r) for r in session.scalars(select(PrincipalRow).order_by(PrincipalRow.name))]


def get_user(session: Session, *, name: str) -> User:
    return _model(user_row(session, name))


def user_row(session: Session, name: str) -> PrincipalRow:
    row = session.scalars(select(PrincipalRow).where(PrincipalRow.name == name)).first()
    if row is None:
        raise NotFound(f"user {name!r} not found")
    return row


def delete_user(session: Session, *, name: str, by: str) -> None:
    """Remove a user and so their token (their jobs stay, with who submitted them). Not oneself, not the last
    admin: someone must be able to manage the server."""
    row = user_row(session, name)
    if name == by:
        raise Conflict("you cannot delete yourself; another admin can")
    if row.is_admin and session.scalar(select(func.count()).where(PrincipalRow.is_admin)) == 1:
        raise Conflict(f"user {name!r} is the last admin")
    session.delete(row)


def new_token(session: Session, *, name: str, expires_in: float | None = None) -> UserCreated:
    """Give a user a new token; the old one stops working at once."""
    row = user_row(session, name)
    token = secrets.token_urlsafe(32)
    row.token_sha256 = token_hash(token)
    row.token_expires_at = _expiry(expires_in)
    session.flush()
    return UserCreated(**_model(row).model_dump(), token=token)


def revoke_token(session: Session, *, name: str) -> None:
    """The user's token stops working; the hash of a secret nobody is told takes its place."""
    user_row(session, name).token_sha256 = token_hash(secrets.token_urlsafe(32))
