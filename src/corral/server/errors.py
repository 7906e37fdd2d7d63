"""The one place where error codes become HTTP statuses."""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from corral.core import errors
from corral.core.specs import describe_error

STATUS_BY_CODE = {
    errors.InvalidSpec.code: 422,
    errors.InvalidRequest.code: 400,
    errors.NotFound.code: 404,
    errors.AlreadyExists.code: 409,
    errors.Conflict.code: 409,
    errors.Unauthorized.code: 401,
    errors.Forbidden.code: 403,
    errors.TooLarge.code: 413,
    errors.TooManyRequests.code: 429,
    errors.ServerUnavailable.code: 503,
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.CorralError)
    async def _corral_error(_request: Request, exc: errors.CorralError) -> JSONResponse:
        headers = None
        if isinstance(exc, errors.Unauthorized):
            headers = {"WWW-Authenticate": "Bearer"}
        elif isinstance(exc, errors.TooManyRequests):
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        return JSONResponse(exc.to_payload(), status_code=STATUS_BY_CODE.get(exc.code, 500), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = []
        for error in exc.errors():
            loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "(request)"
            details.append({"loc": loc, "message": describe_error(error)})
        message = "; ".join(f"{d['loc']}: {d['message']}" for d in details)
        err = errors.InvalidSpec(f"invalid request: {message}", details=details)
        return JSONResponse(err.to_payload(), status_code=422)
