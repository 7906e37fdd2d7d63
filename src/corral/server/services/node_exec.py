"""``corral cluster node exec``: a command in a node's environment, its output streamed back.

The backend's node access runs it (:meth:`corral.backends.base.NodeAccess.run`); here it becomes Server-Sent
Events: ``stdout`` and ``stderr`` (a line each), then ``exit`` with the exit code. A client that goes away takes
the command with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sse_starlette import ServerSentEvent

from corral.backends.base import NodeRef
from corral.server.context import ServerContext
from corral.server.services.lookup import node_row


def node_ref(ctx: ServerContext, *, workspace: str, cluster: str, node: str) -> NodeRef:
    """The node (``node`` may be its index) as the backend knows it."""
    with ctx.db.read() as session:
        found = node_row(session, workspace=workspace, cluster=cluster, node=node)[1]
        return NodeRef(workspace=workspace, cluster=cluster, name=found.name, gpus=tuple(found.gpus), ip=found.ip)


async def exec_on_node(
    ctx: ServerContext, *, workspace: str, cluster: str, node: str, argv: list[str], run_as: str | None
) -> AsyncIterator[ServerSentEvent]:
    ref = await asyncio.to_thread(node_ref, ctx, workspace=workspace, cluster=cluster, node=node)
    output = await ctx.backends.access.run(ref, argv, run_as=run_as)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        try:
            async for kind, text in output:
                yield ServerSentEvent(text, event=kind)
        finally:
            await output.aclose()  # type: ignore[attr-defined]

    return stream()
