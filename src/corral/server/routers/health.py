from __future__ import annotations

import os

from fastapi import APIRouter

import corral

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> dict[str, object]:
    """Unauthenticated: whether the server answers, its version and pid."""
    return {"status": "ok", "version": corral.__version__, "pid": os.getpid()}
