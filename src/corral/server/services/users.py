"""Users: principals with a token each (stored hashed). Only an admin creates them."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.errors import AlreadyExists, NotFound
from corral.core.models import User, UserCreated
from corral.server.auth import token_hash
from corral.store.tables import PrincipalRow


def _model(row: PrincipalRow) -> User:
    return User(name=row.name, admin=row.is_admin, created_at=datetime.fromtimestamp(row.created_at, UTC))


def create_user(session: Session, *, name: str, admin: bool) -> UserCreated:
    if session.scalars(select(PrincipalRow).where(PrincipalRow.name == name)).first() is not None:
        raise AlreadyExists(f"user {name!r} already exists")
    token = secrets.token_urlsafe(32)
    row = PrincipalRow(name=name, token_sha256=token_hash(token), is_admin=admin, created_at=time.time())
    session.add(row)
    session.flush()
    return UserCreated(**_model(row).model_dump(), token=token)


def list_users(session: Session) -> list[User]:
    return [_model(r) for r in session.scalars(select(PrincipalRow).order_by(PrincipalRow.name))]


def get_user(session: Session, *, name: str) -> User:
    row = session.scalars(select(PrincipalRow).where(PrincipalRow.name == name)).first()
    if row is None:
        raise NotFound(f"user {name!r} not found")
    return _model(row)
