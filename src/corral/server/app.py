"""The FastAPI application: wiring of database, backend, control loop and routers."""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import func, select

import corral
from corral.backends.base import Backends
from corral.core.errors import CorralError, Unauthorized
from corral.server import portal
from corral.server.access import authorize, check_rules
from corral.server.array_driver import ArrayDriver
from corral.server.audit import AuditLog, AuditMiddleware
from corral.server.auth import HOME_ADMIN, Principal, ensure_admin_token, optional_principal
from corral.server.context import LoopControl, ServerContext
from corral.server.errors import ERROR_RESPONSES, install_error_handlers
from corral.server.loop_process import LoopProcess, backends_of, controller_of
from corral.server.metrics_reader import ReaderProcess
from corral.server.routers import (
    audit,
    clusters,
    code,
    experiments,
    health,
    jobs,
    metrics,
    sweeps,
    users,
    volumes,
    workspaces,
)  # fmt: skip
from corral.server.services import commands
from corral.server.services.admission import Admission
from corral.server.services.lookup import NameCache
from corral.server.services.submission import GroupCommit
from corral.server.services.workspaces import ensure_defaults
from corral.server.settings import Settings
from corral.server.sweep_driver import SweepDriver
from corral.server.waiters import JobWaiters
from corral.store import sealed
from corral.store.db import Database
from corral.store.tables import PrincipalRow

API_PREFIX = "/api/v1"
#: The caller of a route that anyone may call, when its token is valid (module level: FastAPI resolves it).
Caller = Annotated[Principal | None, Depends(optional_principal)]
log = logging.getLogger(__name__)


def build_context(settings: Settings, keep_fds: tuple[int, ...] = ()) -> ServerContext:
    """Everything the server runs; ``keep_fds`` (the home's lock) are inherited by the loop's own process."""
    settings.home.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    db.migrate()
    sealed.use_key_file(settings.secrets_key_file)
    with db.write() as session:
        ensure_defaults(session)
        if count := sealed.seal_stored(session):
            log.info("sealed the secrets of %d jobs stored in plain text by an older version", count)
    ensure_admin_token(db, settings.token_file)
    backends = backends_of(settings)
    _say_who_jobs_run_as(db, settings, backends)
    waiters = JobWaiters()
    metrics = ReaderProcess(db.url)

    def jobs_ended(ids: list[int]) -> None:  # called once the loop runs: the context is made by then
        waiters.notify(ids)
        metrics.wake()  # their last metrics, read now (a sweep's trial is told once they are stored)
        context.arrays.nudge()  # an array's task may have ended: its next one, now

    controller: LoopControl
    if settings.runs_loop_process:
        controller = LoopProcess(settings, on_jobs_ended=jobs_ended, keep_fds=keep_fds)
    else:
        controller = controller_of(settings, db, backends, jobs_ended)
    admission = Admission(
        rate=settings.submit_rate, burst=settings.submit_burst, max_queued=settings.max_queued_jobs_per_user
    )
    names = NameCache()
    context = ServerContext(
        settings=settings,
        db=db,
        controller=controller,
        waiters=waiters,
        names=names,
        submissions=GroupCommit(db, names, lambda made: commands.jobs_stored(context, made)),
        admission=admission,
        backends=backends,
        audit=AuditLog(db),
        metrics=metrics,
    )
    context.sweeps = SweepDriver(context)
    context.arrays = ArrayDriver(context)
    metrics.on_stored = context.sweeps.nudge  # new points to prune on, or ended trials to tell
    return context


def _say_who_jobs_run_as(db: Database, settings: Settings, backends: Backends) -> None:
    """Isolating users: every user but the home's admin gets an account, those made in one-user mode (or by an
    older version) included. Else say, where several users share the server's account, that they do."""
    if settings.isolates_users:
        if os.geteuid() != 0:
            raise RuntimeError("CORRAL_RUN_AS_USERS=true needs a server that runs as root (to switch accounts)")
        assert backends.accounts is not None
        with db.write() as session:
            for row in session.scalars(select(PrincipalRow).where(PrincipalRow.unix_user.is_(None))):
                if row.name != HOME_ADMIN:
                    try:
                        row.unix_user = backends.accounts.ensure(row.name, None)
                    except CorralError as exc:
                        log.error("user %s keeps running as the server's user: %s", row.name, exc.message)
        log.info("each user's jobs, setups and node commands run as their own Unix account")
        return
    with db.read() as session:
        users = session.scalar(select(func.count()).select_from(PrincipalRow)) or 0
    if users > 1:
        log.warning(
            "one-user mode: this server does not run as root (or CORRAL_RUN_AS_USERS=false), so the jobs of all "
            "%d users run as %s and can read one another's files and this server's home; give tokens only to "
            "people you would give that account to (docs/security.md)",
            users, getpass.getuser(),
        )  # fmt: skip


def create_app(settings: Settings, keep_fds: tuple[int, ...] = ()) -> FastAPI:
    """``keep_fds``: what the control loop's own process inherits (the home's lock)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = build_context(settings, keep_fds)
        app.state.context = context
        context.audit.start()
        context.controller.start()
        context.metrics.start()
        context.submissions.start()
        context.sweeps.start()
        context.arrays.start()
        log.info("corral server ready, home %s, database %s", settings.home, context.db.url.split("@")[-1])
        try:
            yield
        finally:
            context.sweeps.stop()
            context.arrays.stop()
            context.submissions.stop()
            context.controller.stop()
            context.metrics.stop()
            context.audit.stop()
            context.backends.close()
            context.db.dispose()

    app = FastAPI(
        title="Corral",
        version=corral.__version__,
        lifespan=lifespan,
        openapi_url=None,  # served below, behind a token unless public_docs
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(AuditMiddleware)
    _serve_docs(app, settings)
    app.state.api_prefix = API_PREFIX
    authorised = [Depends(authorize)]  # the one authorisation point, in front of every route (server/access.py)
    app.include_router(health.router, prefix=API_PREFIX, dependencies=authorised)
    routers = (workspaces.router, users.router, clusters.router, experiments.router, jobs.router,
               jobs.workspace_router, code.router, audit.router, volumes.router, metrics.router,
               sweeps.router)  # fmt: skip
    for router in routers:
        app.include_router(router, prefix=API_PREFIX, responses=ERROR_RESPONSES, dependencies=authorised)
    check_rules(app, API_PREFIX)
    portal.install(app)  # the pages at /, after the API's routes
    return app


def _serve_docs(app: FastAPI, settings: Settings) -> None:
    """``/api/v1/openapi.json`` and ``/api/v1/docs``: for callers with a token, or anyone with public_docs."""

    def allowed(caller: Principal | None) -> None:
        if caller is None and not settings.public_docs:
            raise Unauthorized("a bearer token is required for the API's schema (or CORRAL_PUBLIC_DOCS=true)")

    @app.get(f"{API_PREFIX}/openapi.json", include_in_schema=False)
    async def openapi(caller: Caller) -> JSONResponse:
        allowed(caller)
        return JSONResponse(app.openapi())

    @app.get(f"{API_PREFIX}/docs", include_in_schema=False)
    async def docs(caller: Caller) -> HTMLResponse:
        allowed(caller)
        return get_swagger_ui_html(openapi_url=f"{API_PREFIX}/openapi.json", title="Corral API")
