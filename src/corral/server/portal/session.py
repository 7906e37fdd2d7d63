"""Signing in: a Corral token, given once, exchanged for a cookie.

The cookie holds the token itself, ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page
sends it) and ``Secure`` behind HTTPS. The server keeps no session: a token revoked or renewed
(``corral user token``) signs its cookies out at once, and the API takes the cookie wherever it takes the token
(``auth.request_token``). A request that changes something needs the page's CSRF token besides, in the
``X-CSRF-Token`` header (the API) or a form's ``csrf`` field (signing out); signing in and out also refuse
another origin's ``Origin``.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from corral.core.errors import Forbidden, TooLarge, Unauthorized
from corral.server.auth import SESSION_COOKIE, Principal, authenticate, csrf_token

#: How long a sign-in lasts (or until the token expires, or is revoked).
SESSION_SECONDS = 7 * 24 * 3600
MAX_FORM = 4096


class SignInNeeded(Exception):
    """A page asked for without a valid cookie: the browser goes to the sign-in page, and comes back after."""

    def __init__(self, back: str) -> None:
        super().__init__(back)
        self.back = back


async def viewer(request: Request) -> Principal:
    try:
        return await authenticate(request, None)
    except Unauthorized as exc:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInNeeded(back) from exc


#: The signed-in user of a page.
Viewer = Annotated[Principal, Depends(viewer)]


def page_csrf(request: Request) -> str:
    """The CSRF token the page carries (empty when not signed in)."""
    token = request.cookies.get(SESSION_COOKIE)
    return csrf_token(token) if token else ""


def safe_back(back: str | None) -> str:
    """Where to go after signing in: a path of this server only (never ``//elsewhere``)."""
    if back and back.startswith("/") and not back.startswith("//") and not urlsplit(back).netloc:
        return back
    return "/"


def check_origin(request: Request) -> None:
    """A form posted from another site's page is refused (the browser sets ``Origin`` on every POST)."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden(f"a sign-in form posted from another origin ({origin}) is refused")


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form (sign-in and sign-out are the portal's only forms)."""
    if int(request.headers.get("content-length") or 0) > MAX_FORM:
        raise TooLarge(f"a form of at most {MAX_FORM} bytes")
    body = await request.body()
    if len(body) > MAX_FORM:
        raise TooLarge(f"a form of at most {MAX_FORM} bytes")
    return {key: values[0] for key, values in parse_qs(body.decode("utf-8", "replace")).items()}


async def sign_in(request: Request, token: str) -> Principal:
    """The token's user (Unauthorized when it is not valid)."""
    return await authenticate(request, HTTPAuthorizationCredentials(scheme="Bearer", credentials=token))


def session_seconds(principal: Principal) -> int:
    if principal.expires_at is None:
        return SESSION_SECONDS
    return max(1, min(SESSION_SECONDS, int(principal.expires_at - time.time())))


def signout_allowed(request: Request, form: dict[str, str]) -> bool:
    """Signing out: the form carries the page's CSRF token."""
    token = request.cookies.get(SESSION_COOKIE)
    return bool(token) and secrets.compare_digest(form.get("csrf", ""), csrf_token(token or ""))
