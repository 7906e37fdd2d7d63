from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from corral.core.models import Cluster, Node
from corral.core.specs import Duration, Int, Text
from corral.server.deps import Allowed, Ctx, PathName
from corral.server.openapi import TEXT_RESPONSE, ClusterSpecBody
from corral.server.services import clusters as service
from corral.server.services import commands
from corral.server.services.node_exec import exec_on_node

router = APIRouter(prefix="/workspaces/{ws}/clusters", tags=["clusters"])


@router.post("", status_code=201)
def create_cluster(ws: PathName, ctx: Ctx, access: Allowed, spec: ClusterSpecBody) -> Cluster:
    """A new cluster; its nodes' setup runs as its creator's Unix account where users have theirs."""
    return commands.create_cluster(ctx, workspace=ws, spec=spec, access=access)


class ResizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nodes: Int = Field(ge=0)
    deallocation: Literal["requeue", "terminate", "wait"] | None = None


@router.post("/{name}/resize")
def resize_cluster(ws: PathName, name: PathName, body: ResizeRequest, ctx: Ctx) -> Cluster:
    """Grow or shrink to ``nodes``; a shrink treats running jobs by ``deallocation`` (else the cluster's)."""
    return commands.resize_cluster(ctx, workspace=ws, name=name, nodes=body.nodes, deallocation=body.deallocation)


class AutoscaleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_nodes: Int = Field(0, ge=0)
    max_nodes: Int = Field(ge=1)
    idle_timeout: Duration | None = None


@router.post("/{name}/autoscale")
def autoscale_cluster(ws: PathName, name: PathName, body: AutoscaleRequest, ctx: Ctx) -> Cluster:
    """Scale between ``min_nodes`` and ``max_nodes`` with the queue; idle nodes go after ``idle_timeout``."""
    return commands.autoscale_cluster(
        ctx, workspace=ws, name=name, min_nodes=body.min_nodes, max_nodes=body.max_nodes, idle_timeout=body.idle_timeout
    )


@router.get("")
async def list_clusters(ws: PathName, ctx: Ctx) -> list[Cluster]:
    return await ctx.read(lambda session: service.list_clusters(session, workspace=ws))


@router.get("/{name}")
async def get_cluster(ws: PathName, name: PathName, ctx: Ctx) -> Cluster:
    return await ctx.read(lambda session: service.get_cluster(session, workspace=ws, name=name))


@router.delete("/{name}", status_code=204)
def delete_cluster(ws: PathName, name: PathName, ctx: Ctx) -> Response:
    commands.delete_cluster(ctx, workspace=ws, name=name)
    return Response(status_code=204)


@router.get("/{name}/nodes")
async def list_nodes(ws: PathName, name: PathName, ctx: Ctx) -> list[Node]:
    return await ctx.read(lambda session: service.list_nodes(session, workspace=ws, cluster=name))


@router.get("/{name}/nodes/{node}/logs", response_model=None, responses=TEXT_RESPONSE)
def node_logs(ws: PathName, name: PathName, node: PathName, ctx: Ctx) -> PlainTextResponse:
    """The output of the node's ``setup.command``."""
    return PlainTextResponse(commands.node_setup_log(ctx, workspace=ws, cluster=name, node=node))


class ExecRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: list[Text] = Field(min_length=1, max_length=4096)


@router.post("/{name}/nodes/{node}/exec")
async def node_exec(
    ws: PathName, name: PathName, node: PathName, body: ExecRequest, ctx: Ctx, access: Allowed
) -> Response:
    """Run a command in the node's environment (as the caller's Unix account where users have theirs); its
    output as Server-Sent Events, then ``exit``."""
    events = await exec_on_node(
        ctx, workspace=ws, cluster=name, node=node, argv=body.command, run_as=commands.run_as(ctx, access)
    )
    return EventSourceResponse(events, ping=15)


@router.post("/{name}/nodes/{node}/preempt", status_code=202)
def node_preempt(ws: PathName, name: PathName, node: PathName, ctx: Ctx) -> Node:
    """Preempt a node of a low-priority cluster on purpose: notice (SIGTERM) to its job, grace, eviction."""
    return commands.preempt_node(ctx, workspace=ws, cluster=name, node=node)


@router.post("/{name}/nodes/{node}/recover")
def node_recover(ws: PathName, name: PathName, node: PathName, ctx: Ctx) -> Node:
    """Return an unusable node (lost, or its setup failed) to service; its setup runs again if there is one."""
    return commands.recover_node(ctx, workspace=ws, cluster=name, node=node)
