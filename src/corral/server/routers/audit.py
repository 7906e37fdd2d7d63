"""``GET /audit``: the audit trail, newest first (admins only)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import select

from corral.core.models import AuditEntry
from corral.server.deps import Ctx, Cursor
from corral.server.openapi import LIST_RESPONSE
from corral.store.tables import AuditRow

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", responses=LIST_RESPONSE)
def list_audit(
    ctx: Ctx,
    response: Response,
    user: Annotated[str | None, Query(max_length=64, description="This user's requests only ('-': unknown).")] = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[AuditEntry]:
    """Every request that asked to change something, allowed or refused, newest first."""
    query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit + 1)
    if user is not None:
        query = query.where(AuditRow.user == user)
    if cursor is not None:
        query = query.where(AuditRow.id < cursor)
    with ctx.db.read() as session:
        rows = list(session.scalars(query))
    if len(rows) > limit:
        rows = rows[:limit]
        response.headers["X-Next-Cursor"] = str(rows[-1].id)
    return [
        AuditEntry(
            id=r.id,
            at=datetime.fromtimestamp(r.at, UTC),
            user=r.user,
            method=r.method,
            path=r.path,
            status=r.status,
            client=r.client,
        )
        for r in rows
    ]
