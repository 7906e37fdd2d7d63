"""Dependency aliases, so route signatures read like sentences."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from corral.server.auth import CurrentPrincipal, Principal
from corral.server.context import ServerContext


async def get_context(request: Request) -> ServerContext:
    return request.app.state.context


Ctx = Annotated[ServerContext, Depends(get_context)]

__all__ = ["Ctx", "CurrentPrincipal", "Principal"]
