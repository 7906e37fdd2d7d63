"""The local backend's nodes: slices of this machine, each a directory under ``<home>/nodes`` with its own GPUs.

:class:`LocalNodes` is the backend's :class:`~corral.backends.base.NodeProvider` (which nodes can exist, their
GPUs, their directories) and its :class:`~corral.backends.base.NodeAccess` (``cluster node exec`` runs a command
on this machine, in the node's directory, with its GPUs in ``CUDA_VISIBLE_DEVICES`` and its mount root, in its own
session; a client that goes away takes the command with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from corral.backends.base import CACHE_VARIABLE, DEFAULT_INPUT_CACHE_LIMIT, NewNode, NodeRef
from corral.backends.local.accounts import account, open_for_passage
from corral.backends.local.environment import runtime_folder, server_environment
from corral.backends.local.resources import LOCAL_IP, check_local_nodes, machine_gpus, node_root
from corral.core.errors import InvalidRequest
from corral.core.specs import ClusterSpec
from corral.launch.env import node_own_environment
from corral.launch.layout import node_job_paths


class LocalNodes:
    backend = "local"
    features = frozenset({"setup", "preemption", "gpus"})

    def __init__(self, home: Path, *, input_cache_limit: int = DEFAULT_INPUT_CACHE_LIMIT) -> None:
        self._home = home
        self._input_cache_limit = input_cache_limit
        # Beside the workspaces' folders; no workspace name starts with a dot.
        self._input_cache = str(home / "nodes" / ".cache")
        runtime_folder(Path(self._input_cache))  # what jobs without an environment import corral.runtime from

    # ------------------------------------------------------------ provider

    def check(self, spec: ClusterSpec, count: int) -> list[str]:
        return check_local_nodes(spec, count)

    def new_nodes(
        self, spec: ClusterSpec, count: int, *, held_gpus: set[int], held_ips: frozenset[str] = frozenset()
    ) -> list[NewNode]:
        per_node = spec.node.gpus
        free = [g for g in machine_gpus() if g not in held_gpus]
        possible = count if per_node == 0 else min(count, len(free) // per_node)
        return [NewNode(ip=LOCAL_IP, gpus=tuple(free[i * per_node : (i + 1) * per_node])) for i in range(possible)]

    def node_root(self, node: NodeRef) -> str:
        return str(node_root(self._home, node.workspace, node.cluster, node.name))

    def input_cache(self) -> tuple[str, int]:
        return self._input_cache, self._input_cache_limit

    def remove_node_files(self, workspace: str, cluster: str, node: str | None = None) -> None:
        root = node_root(self._home, workspace, cluster, node or "_")
        shutil.rmtree(root if node is not None else root.parent, ignore_errors=True)

    def hold(self, ips: frozenset[str], wanted: int) -> None:
        pass  # nodes are made here: nobody else to tell

    def machines(self) -> frozenset[str] | None:
        return None  # this machine's slices: they come and go with Corral alone

    def remove_job_files(self, job_uid: str) -> None:
        for root in self._home.glob("nodes/*/*/*"):  # every node's root: <home>/nodes/<ws>/<cluster>/<node>
            shutil.rmtree(node_job_paths(str(root), job_uid)["job_temp"], ignore_errors=True)

    # ------------------------------------------------------------ access

    def read_text(self, node: NodeRef, relative: str) -> str:
        try:
            return (Path(self.node_root(node)) / relative).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def run(self, node: NodeRef, argv: list[str], *, run_as: str | None = None) -> AsyncIterator[tuple[str, str]]:
        if not argv:
            raise InvalidRequest("command: give the command to run, e.g. ['nvidia-smi']")
        root = Path(self.node_root(node))
        own = node_own_environment(
            workspace=node.workspace, cluster=node.cluster, node=node.name, root=str(root), gpus=node.gpus
        )
        own[CACHE_VARIABLE] = self.input_cache()[0]  # ``corral env``: the machine's environments are there
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        owner = account(run_as) if run_as else None
        if owner is not None:  # the node's folder stays the server's, open for passage (the command starts there)
            await asyncio.to_thread(open_for_passage, root, within=self._home)
        try:
            process = await asyncio.create_subprocess_exec(
                *(owner.command(argv) if owner else argv),
                cwd=root,
                env={**server_environment(), **(owner.environment(str(root)) if owner else {}), **own},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise InvalidRequest(f"command: cannot run {argv[0]!r}: {exc.strerror}") from None
        return _output(process)


async def _output(process: asyncio.subprocess.Process) -> AsyncIterator[tuple[str, str]]:
    lines: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

    async def pump(name: str, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            await lines.put((name, raw.decode(errors="replace").rstrip("\n")))
        await lines.put(None)

    assert process.stdout is not None and process.stderr is not None
    pumps = [asyncio.create_task(pump("stdout", process.stdout)), asyncio.create_task(pump("stderr", process.stderr))]
    try:
        open_streams = 2
        while open_streams:
            item = await lines.get()
            if item is None:
                open_streams -= 1
                continue
            yield item
        yield "exit", str(await process.wait())
    finally:
        if process.returncode is None:  # the client went away: so does the command
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        for task in pumps:
            task.cancel()
