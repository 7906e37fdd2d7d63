"""Bearer tokens (or the portal's cookie, which holds one). A token is a random secret; only its SHA-256 is stored.

On start the server makes sure ``<home>/token`` (mode 0600) holds a valid admin
token, creating one the first time. Who may call which route is
decided in one place, ``server/access.py``, on the principal :func:`authenticate` finds.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from corral.core.errors import Forbidden, Unauthorized
from corral.store.db import Database
from corral.store.tables import PrincipalRow


@dataclass(frozen=True)
class Principal:
    name: str
    is_admin: bool
    #: When the token stops working (epoch seconds; None: never).
    expires_at: float | None = None
    #: The Unix account their processes run as where users are isolated (None: the server's).
    unix_user: str | None = None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


#: The admin the server makes at its first start, whose token it keeps in ``<home>/token`` for the local CLI.
HOME_ADMIN = "admin"


def ensure_admin_token(db: Database, token_file: Path) -> None:
    """Keep ``token_file`` valid: reuse the token in it, or issue a new admin token."""
    existing = token_file.read_text().strip() if token_file.exists() else ""
    with db.write() as session:
        admin = session.scalars(select(PrincipalRow).where(PrincipalRow.name == HOME_ADMIN)).first()
        if admin is not None and existing and admin.token_sha256 == token_hash(existing):
            return
        token = secrets.token_urlsafe(32)
        if admin is None:
            session.add(
                PrincipalRow(name=HOME_ADMIN, token_sha256=token_hash(token), is_admin=True, created_at=time.time())
            )
        else:
            admin.token_sha256 = token_hash(token)
    write_token_file(token_file, token)


def write_token_file(token_file: Path, token: str) -> None:
    """The admin token for the local CLI, readable by the server's user alone, replaced atomically."""
    token_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = token_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    os.replace(tmp, token_file)


bearer = HTTPBearer(auto_error=False)
#: The portal's sign-in: the token, in an HttpOnly, SameSite=Strict cookie (``server/portal/session.py``).
SESSION_COOKIE = "corral_session"
#: What a request signed in by that cookie carries to change anything: :func:`csrf_token` of its token.
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(token: str) -> str:
    """The portal's pages carry it (a page of another site cannot read it, nor the cookie it derives from)."""
    return hashlib.sha256(b"corral-csrf:" + token.encode()).hexdigest()


def request_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The bearer token, else the portal's cookie: for a request that changes something, only with the CSRF
    token of its page, so that another site cannot make a signed-in browser change anything."""
    if credentials is not None and credentials.credentials:
        return credentials.credentials
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    if request.method not in SAFE_METHODS and not secrets.compare_digest(
        request.headers.get(CSRF_HEADER, ""), csrf_token(token)
    ):
        raise Forbidden(f"a request signed in by the portal's cookie needs the {CSRF_HEADER} header of its page")
    return token


async def authenticate(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """Async on purpose: a sync dependency costs every request a hop to the thread pool and back. Principals are
    cached by token; deleting a user or giving them a new token empties the cache (it takes effect at once)."""
    token = request_token(request, credentials)
    if token is None:
        raise Unauthorized("a bearer token is required (see $CORRAL_HOME/token)")
    digest = token_hash(token)
    cache: dict[str, Principal] = request.app.state.context.principals
    principal = cache.get(digest)
    if principal is None:
        db: Database = request.app.state.context.db

        def lookup() -> PrincipalRow | None:
            with db.read() as session:
                return session.scalars(select(PrincipalRow).where(PrincipalRow.token_sha256 == digest)).first()

        row = await asyncio.to_thread(lookup)
        if row is None:
            raise Unauthorized("the bearer token is not valid")
        principal = cache[digest] = Principal(
            name=row.name, is_admin=row.is_admin, expires_at=row.token_expires_at, unix_user=row.unix_user
        )
    request.state.corral_user = principal.name  # for the audit trail
    if principal.expires_at is not None and principal.expires_at <= time.time():
        raise Unauthorized(f"the bearer token of {principal.name!r} has expired (corral user token gives a new one)")
    return principal


async def optional_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal | None:
    """The caller when its token is valid, else None (for routes that say more to a known caller)."""
    try:
        return await authenticate(request, credentials)
    except Unauthorized:
        return None
