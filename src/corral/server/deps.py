"""Dependency aliases, so route signatures read like sentences."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request

from corral.core.models import USER_NAME_PATTERN
from corral.core.specs import NAME_PATTERN
from corral.server.access import Allowed
from corral.server.context import ServerContext


async def get_context(request: Request) -> ServerContext:
    return request.app.state.context


Ctx = Annotated[ServerContext, Depends(get_context)]
#: A workspace's, experiment's, cluster's, node's or job's name in a URL: the pattern names have in bodies, so a
#: name no body could create (a space, ``..``) is refused with 422 before it reaches a service.
PathName = Annotated[str, Path(pattern=NAME_PATTERN, description="a name: letters, digits, '_', '.', '-'")]
#: A user's name in a URL (names may also hold ``@``).
UserPathName = Annotated[str, Path(pattern=USER_NAME_PATTERN, description="a user's name")]

#: Row ids are 32-bit integers: a page cursor past the last one gives an empty page.
MAX_ROW_ID = 2**31 - 1


# A coroutine: FastAPI runs a plain function (a dependency too) in its thread pool, a hop that costs more than this.
async def page_cursor(
    cursor: Annotated[str | None, Query(pattern="^[0-9]{1,18}$", description="X-Next-Cursor of the last page.")] = None,
) -> int | None:
    return None if cursor is None else min(int(cursor), MAX_ROW_ID)


#: Where a list's page starts (``cursor``, the row id a previous page's ``X-Next-Cursor`` gave), as an id.
Cursor = Annotated[int | None, Depends(page_cursor)]

__all__ = ["Allowed", "Ctx", "Cursor", "PathName", "UserPathName"]
