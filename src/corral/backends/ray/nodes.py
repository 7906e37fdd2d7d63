"""A Ray cluster's machines as Corral's nodes: which can be had, their folders, commands run on them.

:class:`RayNodes` is the backend's :class:`~corral.backends.base.NodeProvider` and
:class:`~corral.backends.base.NodeAccess`. A new node is a machine alive that offers Corral's resource and that
no node holds yet (one Corral node per machine). Its folder is ``<node base>/<workspace>/<cluster>`` on the
machine's own disk (one path on every machine of a cluster); ``cluster node exec`` and ``cluster node logs`` go
through the machine's agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import PurePath
from typing import Any

from corral.backends.base import CACHE_VARIABLE, DEFAULT_INPUT_CACHE_LIMIT, NewNode, NodeRef
from corral.backends.ray.cluster import RayCluster, unwrap
from corral.core.errors import InvalidRequest, InvalidSpec
from corral.core.specs import ClusterSpec
from corral.launch.env import node_own_environment

log = logging.getLogger(__name__)

#: The label Ray gives every node: its id.
NODE_ID_LABEL = "ray.io/node-id"
#: Names of the machines' reservations (placement groups) start so.
RESERVATION = "corral-node-"


def reservation_name(ip: str) -> str:
    return f"{RESERVATION}{ip}"


#: How long removing files waits for the machines.
REMOVE_SECONDS = 5.0
#: How long one read of a command's output waits on the agent.
EXEC_POLL_SECONDS = 1.0


class RayNodes:
    backend = "ray"
    features = frozenset({"setup"})

    def __init__(self, cluster: RayCluster, *, input_cache_limit: int = DEFAULT_INPUT_CACHE_LIMIT) -> None:
        self._cluster = cluster
        self._base = cluster.node_base
        self._input_cache_limit = input_cache_limit
        #: The machines last asked of Ray's autoscaler (None: not asked yet by this server).
        self._requested: int | None = None
        #: The names of the machines' reservations made (None: not looked up yet).
        self._reserved: set[str] | None = None
        #: The machines Corral's nodes are on, as last told (``hold``; None: not told yet by this server).
        self._holding: frozenset[str] | None = None

    # ------------------------------------------------------------ provider

    def check(self, spec: ClusterSpec, count: int) -> list[str]:
        if spec.node.gpus:
            raise InvalidSpec(
                "node.gpus: GPUs on Ray clusters are not available in this version",
                details=[{"loc": "node.gpus", "message": "not available on the ray backend in this version"}],
            )
        alive = len(self._cluster.alive_ips())
        if count > alive:
            return [
                f"the Ray cluster has {alive} machines offering {self._cluster.resource!r} now: the cluster stays "
                f"resizing until {count} have joined"
            ]
        return []

    def new_nodes(
        self, spec: ClusterSpec, count: int, *, held_gpus: set[int], held_ips: frozenset[str] = frozenset()
    ) -> list[NewNode]:
        if spec.node.gpus:  # no machine here offers them (``check`` refuses such a cluster)
            return []
        free = sorted(ip for ip in self._cluster.alive_ips() if ip not in held_ips)
        return [NewNode(ip=ip) for ip in free[:count]]

    def hold(self, ips: frozenset[str], wanted: int) -> None:
        self._holding = ips
        self._request(wanted)
        self._reserve(ips)

    def _request(self, wanted: int) -> None:
        """Tell Ray's autoscaler the machines Corral's clusters want in all (it replaces the last request); it
        starts machines for what is missing, and they join as new nodes."""
        if wanted == self._requested:
            return
        from ray.autoscaler.sdk import request_resources

        try:
            request_resources(bundles=[{self._cluster.resource: 1}] * wanted)
        except Exception:  # the head is away: asked again at the next change or restart, nodes need not wait
            log.warning("could not ask Ray's autoscaler for %d machines", wanted, exc_info=True)
            return
        self._requested = wanted

    def _reserve(self, ips: frozenset[str]) -> None:
        """Hold each machine a node is on with a placement group of its own (``corral-node-<ip>``: one bundle of
        Corral's resource, pinned to the machine by its Ray node id, detached), for as long as the node exists:
        Ray's accounting — and its autoscaler, which would otherwise take a machine running Corral's processes
        for idle — sees it in use. Per node, not per attempt: Ray hands a removed group's resources back about
        a second later, which each job would wait for."""
        import ray
        from ray.util.placement_group import placement_group, placement_group_table

        if self._reserved is None:  # what an earlier server left: let go of what no node holds any more
            self._reserved = {
                g["name"]
                for g in placement_group_table().values()
                if g["name"].startswith(RESERVATION)
                and g["state"] != "REMOVED"
                and any(self._cluster.resource in bundle for bundle in g["bundles"].values())  # not another's
            }
        alive = self._cluster.alive_ips()
        wanted = {reservation_name(ip): ip for ip in ips if ip in alive}
        for name in self._reserved - set(wanted):  # a machine let go of: no reservation, no agent left there
            with contextlib.suppress(Exception):  # gone with its machine already
                ray.util.remove_placement_group(ray.util.get_placement_group(name))
            self._cluster.end_agent(name.removeprefix(RESERVATION))
        held = self._reserved & set(wanted)
        for name in set(wanted) - self._reserved:
            selector = [{NODE_ID_LABEL: alive[wanted[name]]}]
            try:
                placement_group(
                    [{self._cluster.resource: 1}], name=name, lifetime="detached", bundle_label_selector=selector
                )
            except Exception:  # tried again at the next change of nodes
                log.warning("could not reserve the machine at %s in Ray", wanted[name], exc_info=True)
                continue
            held.add(name)
        self._reserved = held

    def machines(self) -> frozenset[str] | None:
        return frozenset(self._cluster.alive_ips())

    def input_cache(self) -> tuple[str, int]:
        return str(PurePath(self._base, ".cache")), self._input_cache_limit

    def node_root(self, node: NodeRef) -> str:
        # The same path on every machine of the cluster (each holds one of its nodes), as Batch AI's nodes had:
        # a job's working directory is one path everywhere, which mpirun needs (it starts remote ranks there).
        return str(PurePath(self._base, node.workspace, node.cluster))

    def remove_node_files(self, workspace: str, cluster: str, node: str | None = None) -> None:
        if node is not None:
            return  # a machine that leaves keeps its node's folder until the cluster goes (it may come back)
        folder = str(PurePath(self._base, workspace, cluster))
        self._on_every_machine(lambda agent: agent.remove.remote([folder]))

    def remove_job_files(self, job_uid: str) -> None:
        # Every node's root is <base>/<workspace>/<cluster>; the records of its runs are <base>/runs/.
        patterns = [f"*/*/jobs/{job_uid}", f"runs/{job_uid}.*"]
        self._on_every_machine(lambda agent: agent.remove_matching.remote(self._base, patterns))

    def _on_every_machine(self, call: Callable[[Any], Any]) -> None:
        """Call every machine's agent and wait for them (a few seconds at most: one that does not answer keeps
        its files, on its own disk). An agent started for it on a machine no node is on ends after."""
        import ray

        calls = []
        machines = set(self._cluster.alive_ips())
        for ip in machines:
            with contextlib.suppress(Exception):
                calls.append(call(self._cluster.agent(ip)))
        if calls:
            ray.wait(calls, num_returns=len(calls), timeout=REMOVE_SECONDS)
        if self._holding is not None:
            for ip in machines - self._holding:
                self._cluster.end_agent(ip)

    # ------------------------------------------------------------ access

    def read_text(self, node: NodeRef, relative: str) -> str:
        import ray

        try:
            agent = self._cluster.agent(node.ip)
        except LookupError:
            return ""
        chunks = ray.get(agent.read.remote([(str(PurePath(self.node_root(node), relative)), 0)]))
        return bytes(chunks[0]).decode(errors="replace")

    async def run(self, node: NodeRef, argv: list[str], *, run_as: str | None = None) -> AsyncIterator[tuple[str, str]]:
        if not argv:
            raise InvalidRequest("command: give the command to run, e.g. ['nvidia-smi']")
        root = self.node_root(node)
        own = node_own_environment(workspace=node.workspace, cluster=node.cluster, node=node.name, root=root, gpus=())
        own[CACHE_VARIABLE] = self.input_cache()[0]
        try:
            agent = self._cluster.agent(node.ip)
            pid = await agent.exec_start.remote(argv, root, own, run_as, self._base)
        except LookupError as exc:
            raise InvalidRequest(f"node: {exc}") from None
        except Exception as exc:  # the command could not start there (no such program, no such account)
            raise InvalidRequest(f"command: cannot run {argv[0]!r} on {node.ip}: {unwrap(exc)}") from None
        return _output(agent, pid)


async def _output(agent: Any, pid: int) -> AsyncIterator[tuple[str, str]]:
    ended = False
    try:
        while not ended:
            lines = await agent.exec_read.remote(pid, EXEC_POLL_SECONDS)
            for line in lines:
                ended = line[0] == "exit"
                yield line[0], line[1]
    finally:
        if not ended:  # the client went away: so does the command
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(agent.exec_kill.remote(pid).future())
