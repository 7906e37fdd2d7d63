"""The FastAPI application: wiring of database, backend, control loop and routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import corral
from corral.backends.base import Backends
from corral.backends.registry import create_backends
from corral.scheduler.loop import Controller
from corral.scheduler.ports import PortAllocator
from corral.server.auth import ensure_admin_token
from corral.server.context import ServerContext
from corral.server.errors import ERROR_RESPONSES, install_error_handlers
from corral.server.routers import clusters, code, experiments, health, jobs, users, workspaces
from corral.server.services.admission import Admission
from corral.server.services.lookup import NameCache
from corral.server.services.workspaces import ensure_defaults
from corral.server.settings import Settings
from corral.server.waiters import JobWaiters
from corral.store.db import Database

API_PREFIX = "/api/v1"
log = logging.getLogger(__name__)


def build_context(settings: Settings) -> ServerContext:
    settings.home.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    db.migrate()
    with db.write() as session:
        ensure_defaults(session)
    ensure_admin_token(db, settings.token_file)
    backends: Backends = create_backends(home=settings.home, code_dir=settings.code_dir)
    waiters = JobWaiters()
    controller = Controller(
        db=db,
        backends=backends,
        on_jobs_ended=waiters.notify,
        tick_seconds=settings.scheduler_tick,
        coalesce_seconds=settings.scheduler_coalesce,
        ports=PortAllocator(*settings.ports),
        fairshare_half_life=settings.fairshare_half_life,
    )
    admission = Admission(
        rate=settings.submit_rate, burst=settings.submit_burst, max_queued=settings.max_queued_jobs_per_user
    )
    return ServerContext(
        settings=settings,
        db=db,
        controller=controller,
        waiters=waiters,
        names=NameCache(),
        admission=admission,
        backends=backends,
    )


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = build_context(settings)
        app.state.context = context
        app.state.principals = {}
        context.controller.start()
        log.info("corral server ready, home %s, database %s", settings.home, context.db.url.split("@")[-1])
        try:
            yield
        finally:
            context.controller.stop()
            context.backends.close()
            context.db.dispose()

    app = FastAPI(
        title="Corral",
        version=corral.__version__,
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(health.router, prefix=API_PREFIX)
    for router in (workspaces, users, clusters, experiments, jobs, code):
        app.include_router(router.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(jobs.workspace_router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    return app
