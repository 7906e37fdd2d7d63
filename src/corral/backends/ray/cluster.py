"""The server as a driver of one Ray cluster: its machines, and the agent on each.

A Corral node on Ray is one Ray node (one machine) offering the custom resource that marks it for Corral
(``CORRAL_RAY_NODE_RESOURCE``, ``corral_node`` by default: ``ray start --resources '{"corral_node": 1}'``); the
head, without it, takes no jobs. Corral knows a machine by its IP address: that is what jobs need (MASTER_ADDR,
MPI's hostfile), and a Ray node that comes back on the same machine is the same Corral node.

On each machine in use runs one agent (:class:`~corral.backends.ray.agent.NodeAgent`): a detached actor named
after the machine's address, pinned to its Ray node, holding no CPU. Detached, it outlives the server, and a
restarted server finds it again by name.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import corral

log = logging.getLogger(__name__)

#: Concurrent calls one agent serves (long polls for ends and command output among them).
AGENT_CONCURRENCY = 64
#: How long an agent may take to start (a machine's first Ray worker starts a Python process).
AGENT_START_SECONDS = 60.0


class RayCluster:
    def __init__(
        self,
        address: str,
        *,
        namespace: str = "corral",
        resource: str = "corral_node",
        node_base: str = "/var/lib/corral-node",
    ) -> None:
        import ray

        #: Every node's folder, on its machine's own disk.
        self.node_base = node_base.rstrip("/") or "/"
        self.resource = resource
        self.namespace = namespace
        if not ray.is_initialized():
            # Ray's driver takes SIGTERM over (it exits at once); the server's own shutdown keeps it.
            handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
            ray.init(address=address, namespace=namespace, logging_level=logging.WARNING, log_to_driver=False)
            if threading.current_thread() is threading.main_thread():
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)
        self._agents: dict[str, Any] = {}
        self._lock = threading.Lock()

    def alive_ips(self) -> dict[str, str]:
        """IP -> Ray node id of every machine alive that offers Corral's resource."""
        import ray

        return {
            n["NodeManagerAddress"]: n["NodeID"]
            for n in ray.nodes()
            if n["Alive"] and (n.get("Resources") or {}).get(self.resource)
        }

    def agent(self, ip: str, *, start: bool = True) -> Any:
        """The agent on the machine at ``ip``, started there if it is not yet (unless ``start`` is false); raise
        ``LookupError`` when no machine alive offers Corral's resource at that address (or no agent is there)."""
        with self._lock:
            found = self._agents.get(ip)
        if found is not None:
            return found
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from corral.backends.ray.agent import NodeAgent

        if not start:
            try:
                return ray.get_actor(agent_name(ip), namespace=self.namespace)
            except ValueError:
                raise LookupError(f"no Corral agent runs on {ip}") from None

        node_id = self.alive_ips().get(ip)
        if node_id is None:
            raise LookupError(f"no machine of the Ray cluster offers {self.resource!r} at {ip} now")
        options = {
            "name": agent_name(ip),
            "namespace": self.namespace,
            "lifetime": "detached",
            "get_if_exists": True,
            "num_cpus": 0,
            "max_concurrency": AGENT_CONCURRENCY,
            "max_restarts": 0,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False),
        }
        arguments = (corral.__version__, self.node_base, self.namespace)
        actor: Any = ray.remote(NodeAgent).options(**options).remote(*arguments)
        version = self._version(actor, ip)
        if version != corral.__version__:  # an agent of an older server lives on: it makes way for this one's
            log.info("replacing the agent on %s (corral %s) with one of corral %s", ip, version, corral.__version__)
            ray.kill(actor)
            actor = ray.remote(NodeAgent).options(**options).remote(*arguments)
            self._version(actor, ip)
        with self._lock:
            self._agents[ip] = actor
        return actor

    @staticmethod
    def _version(actor: Any, ip: str) -> str:
        """The agent's Corral version, once it has started; raise ``LookupError`` saying why it could not."""
        import ray
        from ray.exceptions import RayActorError

        try:
            return str(ray.get(actor.hello.remote(), timeout=AGENT_START_SECONDS)["version"])
        except RayActorError as exc:
            raise LookupError(f"the Corral agent on {ip} could not start: {unwrap(exc)}") from None

    def end_agent(self, ip: str) -> None:
        """End the agent on the machine at ``ip``, if one runs there: Ray counts a machine with an actor on it as
        busy, so its autoscaler switches off only machines Corral has let go of and left no agent on."""
        with self._lock:
            self._agents.pop(ip, None)
        try:
            actor = self.agent(ip, start=False)
        except LookupError:
            return
        import ray

        log.info("ending the agent on %s: Corral holds no node there", ip)
        try:
            ray.kill(actor)
        except Exception:  # gone already
            log.debug("ending the agent on %s failed", ip, exc_info=True)

    def drop_agent(self, ip: str) -> None:
        """Forget the agent at ``ip`` (it died): the next call starts a new one where the machine is alive."""
        with self._lock:
            self._agents.pop(ip, None)


def unwrap(exc: BaseException) -> BaseException:
    """The exception an agent's method raised, out of Ray's wrapping (``RayTaskError``, an actor's death)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def agent_name(ip: str) -> str:
    return f"corral-agent-{ip}"
