"""Dependency aliases, so route signatures read like sentences."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from corral.core.specs import NAME_PATTERN
from corral.server.auth import AdminPrincipal, CurrentPrincipal, Principal
from corral.server.context import ServerContext


async def get_context(request: Request) -> ServerContext:
    return request.app.state.context


Ctx = Annotated[ServerContext, Depends(get_context)]
#: A workspace's, experiment's, cluster's, node's or job's name in a URL: the pattern names have in bodies, so a
#: name no body could create (a space, ``..``) is refused with 422 before it reaches a service.
PathName = Annotated[str, Path(pattern=NAME_PATTERN, description="a name: letters, digits, '_', '.', '-'")]

__all__ = ["AdminPrincipal", "Ctx", "CurrentPrincipal", "PathName", "Principal"]
