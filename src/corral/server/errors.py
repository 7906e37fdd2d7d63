"""The one place where error codes become HTTP statuses."""

from __future__ import annotations

import math
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from corral.core import errors
from corral.core.spec_parsing import describe_error

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
    errors.StoreError.code: 502,
}


class ErrorDetail(BaseModel):
    #: The field, e.g. ``spec.node_count`` or ``path.exp``.
    loc: str
    message: str


class ErrorBody(BaseModel):
    #: Stable: ``InvalidSpec``, ``InvalidRequest``, ``NotFound``, ``AlreadyExists``, ``Conflict``, ``Unauthorized``,
    #: ``Forbidden``, ``TooLarge``, ``TooManyRequests``.
    code: str
    message: str
    details: list[ErrorDetail] | None = None


class ErrorResponse(BaseModel):
    """Every error the API answers with."""

    error: ErrorBody


_WHEN = {
    400: "A malformed request that is not a spec (a bad path, a rank that does not exist)",
    401: "No token, or one the server does not know",
    403: "The token's user may not do this",
    404: "The workspace, experiment, cluster, node, job or file does not exist",
    409: "The resource exists already, or its state forbids this now",
    413: "The request, or what it would make, passes one of the server's limits",
    422: "A spec or a parameter is invalid; ``details`` names each field",
    429: "A per-user limit was reached; ``Retry-After`` says when to try again",
}
#: Documented on every route but health: the statuses an API client must expect besides success.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse, "description": description} for status, description in _WHEN.items()
}
ERROR_RESPONSES[429]["headers"] = {"Retry-After": {"description": "Seconds", "schema": {"type": "integer"}}}


def _answer(request: Request, payload: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    """JSON for the API; a page of the portal's for a browser on any other path (``server/portal``)."""
    page = getattr(request.app.state, "error_page", None)
    if page is not None and not request.url.path.startswith(request.app.state.api_prefix + "/"):
        return cast(Response, page(request, status, payload["error"]["message"]))
    return JSONResponse(payload, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.CorralError)
    async def _corral_error(request: Request, exc: errors.CorralError) -> Response:
        headers = None
        if isinstance(exc, errors.Unauthorized):
            headers = {"WWW-Authenticate": "Bearer"}
        elif isinstance(exc, errors.TooManyRequests):
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        return _answer(request, exc.to_payload(), STATUS_BY_CODE.get(exc.code, 500), headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Raised by the framework itself (an unknown route, a body that is not JSON): answered in the same shape.
        code = {v: k for k, v in STATUS_BY_CODE.items()}.get(exc.status_code, "HTTPError")
        body = {"error": {"code": code, "message": str(exc.detail)}}
        return _answer(request, body, exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        details = []
        for error in exc.errors():
            loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "(request)"
            details.append({"loc": loc, "message": describe_error(error)})
        message = "; ".join(f"{d['loc']}: {d['message']}" for d in details)
        err = errors.InvalidSpec(f"invalid request: {message}", details=details)
        return _answer(request, err.to_payload(), 422)
