"""Sweeps: made from a spec, listed, shown with their trials best first, terminated."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from corral.core.models import Sweep
from corral.server.deps import Allowed, Ctx, PathName
from corral.server.services import commands
from corral.server.services import sweeps as service

router = APIRouter(prefix="/workspaces/{ws}/experiments/{exp}/sweeps", tags=["sweeps"])


@router.post("", status_code=201)
def create_sweep(ws: PathName, exp: PathName, ctx: Ctx, access: Allowed, body: dict[str, Any] = Body()) -> Sweep:
    """A sweep spec (``docs/sweeps.md``); its first trial is checked as a job before anything is stored."""
    return commands.create_sweep(ctx, workspace=ws, experiment=exp, data=body, access=access)


@router.get("")
def list_sweeps(ws: PathName, exp: PathName, ctx: Ctx) -> list[Sweep]:
    with ctx.db.read() as session:
        return service.list_sweeps(session, workspace=ws, experiment=exp)


@router.get("/{name}")
async def get_sweep(ws: PathName, exp: PathName, name: PathName, ctx: Ctx) -> Sweep:
    """The sweep with every trial, the best first."""
    return await ctx.read(lambda session: service.get_sweep(session, workspace=ws, experiment=exp, name=name))


@router.post("/{name}/terminate")
def terminate_sweep(ws: PathName, exp: PathName, name: PathName, ctx: Ctx, access: Allowed) -> Sweep:
    """Its maker, an owner of the workspace or an admin; its running trials are terminated."""
    return commands.terminate_sweep(ctx, workspace=ws, experiment=exp, name=name, access=access)
