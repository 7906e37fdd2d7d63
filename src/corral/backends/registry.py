"""Where the server gets its backend: the one module that imports a concrete one (``tests/unit/test_imports.py``
holds every other module to the interfaces of :mod:`corral.backends.base`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from corral.backends.base import DEFAULT_INPUT_CACHE_LIMIT, Backends


@dataclass(frozen=True)
class RayConfig:
    """Where the Ray cluster is and how Corral finds its place on it (docs/ray.md)."""

    #: What ``ray.init(address=...)`` takes: ``host:port`` of the head's GCS, or ``auto`` on a Ray machine.
    address: str
    #: Every node's own folder on its machine's disk.
    node_root: str = "/var/lib/corral-node"
    #: The custom resource that marks a Ray machine as one of Corral's nodes.
    resource: str = "corral_node"
    namespace: str = "corral"


def create_backends(
    *,
    home: Path,
    code_dir: Path,
    isolate_users: bool = False,
    ray: RayConfig | None = None,
    input_cache_limit: int = DEFAULT_INPUT_CACHE_LIMIT,
) -> Backends:
    """The local backend (nodes are slices of this machine, their files under ``home/nodes``), or with ``ray``
    the machines of that Ray cluster; with ``isolate_users``, users' processes run as their own Unix accounts
    (on Ray, the accounts must exist on every machine by the same name)."""
    from corral.backends.local.accounts import LocalAccounts

    accounts = LocalAccounts() if isolate_users else None
    if ray is not None:
        from corral.backends.ray.cluster import RayCluster
        from corral.backends.ray.executor import RayExecutor
        from corral.backends.ray.nodes import RayNodes

        cluster = RayCluster(ray.address, namespace=ray.namespace, resource=ray.resource, node_base=ray.node_root)
        machines = RayNodes(cluster, input_cache_limit=input_cache_limit)
        executor = RayExecutor(cluster, code_dir=code_dir, home=home)
        return Backends(executor=executor, nodes=machines, access=machines, accounts=accounts)

    from corral.backends.local.backend import LocalBackend
    from corral.backends.local.nodes import LocalNodes

    nodes = LocalNodes(home, input_cache_limit=input_cache_limit)
    return Backends(executor=LocalBackend(code_dir=code_dir, home=home), nodes=nodes, access=nodes, accounts=accounts)
