"""``corral cluster node exec``: a command in a node's environment, its output streamed back.

The command runs on the node (on the local backend: this machine, in the node's
directory, with its GPUs in ``CUDA_VISIBLE_DEVICES`` and its mount root), in its own
session, as Server-Sent Events: ``stdout`` and ``stderr`` (a line each), then ``exit``
with the exit code. A client that goes away takes the command with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from sse_starlette import ServerSentEvent

from corral.backends.local.backend import server_environment
from corral.backends.local.resources import node_root
from corral.core.errors import InvalidRequest
from corral.launch.env import node_own_environment
from corral.server.context import ServerContext
from corral.server.services.lookup import node_row


def node_environment(ctx: ServerContext, *, workspace: str, cluster: str, node: str) -> tuple[Path, dict[str, str]]:
    with ctx.db.read() as session:
        found = node_row(session, workspace=workspace, cluster=cluster, node=node)[1]
        gpus, node = list(found.gpus), found.name  # ``node`` may have been its index
    root = node_root(ctx.settings.home, workspace, cluster, node)
    own = node_own_environment(workspace=workspace, cluster=cluster, node=node, root=str(root), gpus=gpus)
    env = {**server_environment(), **own}
    return root, env


async def exec_on_node(
    ctx: ServerContext, *, workspace: str, cluster: str, node: str, argv: list[str]
) -> AsyncIterator[ServerSentEvent]:
    if not argv:
        raise InvalidRequest("command: give the command to run, e.g. ['nvidia-smi']")
    root, env = await asyncio.to_thread(node_environment, ctx, workspace=workspace, cluster=cluster, node=node)
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=root,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise InvalidRequest(f"command: cannot run {argv[0]!r}: {exc.strerror}") from None
    lines: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

    async def pump(name: str, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            await lines.put((name, raw.decode(errors="replace").rstrip("\n")))
        await lines.put(None)

    assert process.stdout is not None and process.stderr is not None
    pumps = [asyncio.create_task(pump("stdout", process.stdout)), asyncio.create_task(pump("stderr", process.stderr))]

    async def stream() -> AsyncIterator[ServerSentEvent]:
        try:
            open_streams = 2
            while open_streams:
                item = await lines.get()
                if item is None:
                    open_streams -= 1
                    continue
                yield ServerSentEvent(item[1], event=item[0])
            code = await process.wait()
            yield ServerSentEvent(str(code), event="exit")
        finally:
            if process.returncode is None:  # the client went away: so does the command
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            for task in pumps:
                task.cancel()

    return stream()
