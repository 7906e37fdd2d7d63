"""One error hierarchy for the whole of Corral.

Every error has a stable string ``code`` that travels over the wire
(``{"error": {"code": ..., "message": ..., "details": [...]}}``). The server maps
codes to HTTP statuses in one place (``server/errors.py``); the client maps them
back to these classes with :func:`error_from_payload`, so a caller of the SDK
catches the same exception types as code inside the server.
"""

from __future__ import annotations

from typing import Any


class CorralError(Exception):
    """Base of every error Corral raises on purpose."""

    code = "Internal"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def to_payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class InvalidSpec(CorralError):
    """A cluster or job spec is malformed; ``details`` names each field."""

    code = "InvalidSpec"


class InvalidRequest(CorralError):
    """A request is malformed in a way that is not a spec (bad path, bad query)."""

    code = "InvalidRequest"


class NotFound(CorralError):
    code = "NotFound"


class AlreadyExists(CorralError):
    code = "AlreadyExists"


class Conflict(CorralError):
    """The request is valid but the resource's state forbids it now."""

    code = "Conflict"


class UnloadableSpec(Conflict):
    """A stored spec this version of Corral no longer reads (written by another version, or changed by hand)."""


class Unauthorized(CorralError):
    code = "Unauthorized"


class Forbidden(CorralError):
    code = "Forbidden"


class TooLarge(CorralError):
    """A request, or what it would make, passes one of the server's limits (docs/limits.md)."""

    code = "TooLarge"


class TooManyRequests(CorralError):
    """A user passed a rate or count limit; ``retry_after`` says when to try again (seconds)."""

    code = "TooManyRequests"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class StoreError(CorralError):
    """A volume's store (S3, Azure Blob) refused or failed what the server asked of it."""

    code = "StoreError"


class ServerUnavailable(CorralError):
    """The client could not reach a Corral server."""

    code = "ServerUnavailable"


_BY_CODE: dict[str, type[CorralError]] = {
    cls.code: cls
    for cls in (
        CorralError,
        InvalidSpec,
        InvalidRequest,
        NotFound,
        AlreadyExists,
        Conflict,
        Unauthorized,
        Forbidden,
        TooLarge,
        TooManyRequests,
        StoreError,
        ServerUnavailable,
    )
}


def error_from_payload(payload: Any, fallback: str) -> CorralError:
    """Rebuild the error a server sent; ``fallback`` is the message when the body is not ours."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        body = payload["error"]
        cls = _BY_CODE.get(str(body.get("code")), CorralError)
        return cls(str(body.get("message", fallback)), details=body.get("details") or None)
    return CorralError(fallback)
