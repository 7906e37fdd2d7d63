"""The audit trail: every request that asked to change something (any method but GET, HEAD and OPTIONS),
allowed or refused — who, what, when, from where, and the answer's status — appended to the ``audit`` table.

Recording stays off the request's path: the middleware hands each entry to :class:`AuditLog`, whose thread
writes what came in a batch every :data:`FLUSH_SECONDS` (and what is left when the server stops). A server killed
with SIGKILL loses at most the entries of that last fraction of a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from sqlalchemy import insert
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.server.auth import SAFE_METHODS
from corral.store.db import Database
from corral.store.tables import AuditRow

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.2
UNCHANGING = SAFE_METHODS
#: Set on the request's state by authentication: who made the request.
USER_KEY = "corral_user"


class AuditLog:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._entries: deque[dict[str, Any]] = deque()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="corral-audit", daemon=True)

    def record(self, entry: dict[str, Any]) -> None:
        self._entries.append(entry)  # thread-safe

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self.flush()

    def flush(self) -> None:
        batch = []
        while self._entries:
            batch.append(self._entries.popleft())
        if batch:
            with self._db.write() as session:
                session.execute(insert(AuditRow), batch)

    def _run(self) -> None:
        while not self._stopped.wait(FLUSH_SECONDS):
            try:
                self.flush()
            except Exception:  # the next flush tries again; entries taken out are logged, not lost silently
                log.exception("could not write the audit trail")


class AuditMiddleware:
    """Pure ASGI (it must not buffer streamed responses): notes the status and hands the entry to the log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in UNCHANGING:
            await self.app(scope, receive, send)
            return
        status = 500

        async def noting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting)
        finally:
            context = getattr(scope["app"].state, "context", None)
            if context is not None:
                client = scope.get("client")
                context.audit.record({
                    "at": time.time(), "user": scope.get("state", {}).get(USER_KEY, "-"), "method": scope["method"],
                    "path": scope["path"][:4000], "status": status, "client": client[0] if client else "-",
                })  # fmt: skip
