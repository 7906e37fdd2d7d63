from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

import corral
from corral.server.deps import Allowed

router = APIRouter(tags=["health"])

HEALTH_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "The server answers and its control loop passes"},
    503: {"description": "The control loop is stuck, failing or stopped (``loop.status`` with a token)"},
}


@router.get("/health", responses=HEALTH_RESPONSES)
def health(request: Request, access: Allowed) -> JSONResponse:
    """Whether the server answers and its control loop runs. Without a valid token, that alone; with one, also
    its version, pid and the loop's state."""
    loop = request.app.state.context.controller.health()
    code = 200 if loop["status"] == "ok" else 503
    body: dict[str, object] = {"status": "ok" if code == 200 else "unhealthy"}
    if access.principal is not None:
        body.update(version=corral.__version__, pid=os.getpid(), loop=loop)
    return JSONResponse(body, status_code=code)
