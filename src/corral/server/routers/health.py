from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

import corral

router = APIRouter(tags=["health"])

HEALTH_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "The server answers and its control loop passes"},
    503: {"description": "The control loop is stuck, failing or stopped (``loop.status``)"},
}


@router.get("/health", responses=HEALTH_RESPONSES)
def health(request: Request) -> JSONResponse:
    """Unauthenticated: whether the server answers and its control loop runs, its version and pid."""
    loop = request.app.state.context.controller.health()
    body = {"status": "ok" if loop["status"] == "ok" else "unhealthy", "version": corral.__version__,
            "pid": os.getpid(), "loop": loop}  # fmt: skip
    return JSONResponse(body, status_code=200 if loop["status"] == "ok" else 503)
