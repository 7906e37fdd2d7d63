from __future__ import annotations

from fastapi import APIRouter, Response

from corral.core.models import Experiment, ExperimentCreate
from corral.server.deps import Ctx, PathName
from corral.server.services import commands
from corral.server.services import experiments as service

router = APIRouter(prefix="/workspaces/{ws}/experiments", tags=["experiments"])


@router.post("", status_code=201)
def create_experiment(ws: PathName, body: ExperimentCreate, ctx: Ctx) -> Experiment:
    with ctx.db.write() as session:
        return service.create_experiment(session, workspace=ws, name=body.name)


@router.get("")
async def list_experiments(ws: PathName, ctx: Ctx) -> list[Experiment]:
    return await ctx.read(lambda session: service.list_experiments(session, workspace=ws))


@router.get("/{name}")
async def get_experiment(ws: PathName, name: PathName, ctx: Ctx) -> Experiment:
    return await ctx.read(lambda session: service.get_experiment(session, workspace=ws, name=name))


@router.delete("/{name}", status_code=204)
def delete_experiment(ws: PathName, name: PathName, ctx: Ctx) -> Response:
    commands.delete_experiment(ctx, workspace=ws, name=name)
    return Response(status_code=204)
